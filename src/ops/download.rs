//! The steps of `download` that are its own (the archive, removal and report steps are shared
//! with upload-to-share in `results.rs`):
//!
//! - `download.fetch`: the run's archive from the pod's HTTP server through the port-forward
//!   supervisor into `<out>/<run>.tar.gz.part`, resumed with `Range` from the cursor (offset
//!   and SHA-256 state), verified (size and SHA-256) and renamed to `<out>/<run>.tar.gz`. In
//!   direct mode (`--direct`, or a pod without an HTTP server) the bucket's objects instead,
//!   through the S3 port-forward, each resumed from its `.part` file, several at a time.
//! - `download.extract`: safe extraction into a temporary directory renamed into place.
//!
//! Local I/O errors are classified ([`io_err`], `results::io::classify_io`): an output
//! directory on a read-only or full file system, or one root may not write, fails the step at
//! once with the path in the message; only errors that may pass (EIO, EINTR, ...) are retried.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::base::{env, io_err, register_steps, ROBOVAST_POD};
use super::results::{self, display, previous, ArchiveInfo, PlanItem, RunResult};
use crate::cluster::portforward::PortForward;
use crate::engine::{Registry, StepContext, StepError};
use crate::progress::{self, Mode, Progress};
use crate::results::fetch::{self, FetchCursor, FetchError, FetchSink};

pub fn register(r: &mut Registry) {
    register_steps!(r;
        "download.fetch" => fetch_step,
        "download.extract" => extract_step,
    );
}

fn output_dir(cx: &StepContext) -> Result<PathBuf, StepError> {
    cx.param::<String>("output")?
        .map(PathBuf::from)
        .ok_or_else(|| StepError::permanent("the run has no output directory"))
}

fn local_archive(out: &Path, run: &str) -> PathBuf {
    out.join(format!("{run}.tar.gz"))
}

fn staging_dir(out: &Path, run: &str) -> PathBuf {
    out.join(format!(".{run}.vast-staging"))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FetchState {
    #[serde(default)]
    fetch: Option<FetchCursor>,
    /// Downloads that failed verification (the second failure fails the run).
    #[serde(default)]
    verify_failures: u32,
}

struct Sink<'a> {
    cx: &'a StepContext,
    state: Mutex<FetchState>,
    bar: Mutex<Progress>,
    stalled_reconnects: u32,
}

impl FetchSink for Sink<'_> {
    fn checkpoint(&self, cursor: &FetchCursor) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.fetch = Some(cursor.clone());
        if let Err(e) = self.cx.save_cursor(&*st) {
            tracing::warn!("{e}");
        }
        self.cx.progress(cursor.offset, cursor.size);
    }
    fn progress(&self, done: u64, _total: u64) {
        self.bar
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(done);
    }
    fn stalled_reconnects(&self) -> u32 {
        self.stalled_reconnects
    }
}

async fn fetch_step(cx: &StepContext) -> Result<Value, StepError> {
    let prev = previous(cx, "archive")?;
    let item: PlanItem = cx.item()?;
    if cx.param::<bool>("direct")?.unwrap_or(false) {
        return fetch_direct(cx, &item).await;
    }
    let Some(info) = prev.archive.clone() else {
        return Err(StepError::permanent(format!(
            "no archive of run {} to download",
            item.run
        )));
    };
    let out = output_dir(cx)?;
    let mode = display(cx);
    std::fs::create_dir_all(&out).map_err(|e| io_err("create", &out, e))?;
    let local = local_archive(&out, &info.run);
    let part = out.join(format!("{}.tar.gz.part", info.run));
    // A local copy from an earlier download of the same archive is reused.
    if let Ok(m) = std::fs::metadata(&local) {
        if m.len() == info.size && hash_file(&local).await? == info.sha256 {
            progress::status(mode, &info.run, "reusing the local archive (verified)");
            return Ok(json!(RunResult {
                archive: Some(info),
                ..prev
            }));
        }
    }
    let mut state: FetchState = cx.cursor()?.unwrap_or_default();
    let cursor = match state.fetch.take() {
        Some(c) if c.sha256 == info.sha256 && c.size == info.size => c,
        _ => FetchCursor::new(&info.sha256, info.size),
    };
    if cursor.offset > 0 {
        tracing::info!(
            "Found partial download ({} bytes), resuming...",
            cursor.offset
        );
    }
    let e = env(cx)?;
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), &e.namespace);
    let forward = PortForward::start(pods, ROBOVAST_POD, 80)
        .await
        .map_err(|err| StepError::transient(err.to_string()))?;
    let offset = cursor.offset;
    let sink = Sink {
        cx,
        state: Mutex::new(state.clone()),
        bar: Mutex::new(Progress::bytes(
            &format!("{}  downloading", info.run),
            info.size,
            offset,
            mode,
        )),
        stalled_reconnects: super::base::budget(cx, "stalled_reconnects", 5),
    };
    let path = format!("/{}.tar.gz", info.run);
    let result = fetch::fetch(
        &Forwarded(forward),
        &path,
        &part,
        cursor,
        &sink,
        cx.cancel_token(),
    )
    .await;
    if cx.is_cancelled() {
        return Err(StepError::cancelled());
    }
    match result {
        Ok(done) => {
            sink.bar
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finish_at(done.size);
            std::fs::rename(&part, &local).map_err(|e| io_err("rename into", &local, e))?;
            Ok(json!(RunResult {
                archive: Some(info),
                detail: Some(json!({
                    "received": done.received,
                    "resent": done.received.saturating_sub(done.size),
                    "resumed_from": offset,
                })),
                ..prev
            }))
        }
        Err(err @ FetchError::Verify { .. }) => {
            // The bytes are wrong: discard them; the remote copy stays.
            let _ = std::fs::remove_file(&part);
            state.fetch = None;
            state.verify_failures += 1;
            cx.save_cursor(&state)?;
            if state.verify_failures >= 2 {
                return Err(StepError::permanent(err.to_string()));
            }
            Err(StepError::transient(format!("{err}; downloading again")))
        }
        Err(FetchError::NotFound { url }) => Err(StepError::permanent(
            format!("Failed to download run {} via HTTP: {url} is gone from the pod (run download again to rebuild it)", info.run)
        )),
        Err(err) if err.is_transient() => Err(StepError::transient(format!(
            "Failed to download run {} via HTTP: {err}",
            info.run
        ))),
        Err(err) => Err(StepError::permanent(err.to_string())),
    }
}

/// Each request on its own forwarded stream, without the supervisor's local TCP hop.
struct Forwarded(PortForward);

impl fetch::Connect for Forwarded {
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn fetch::Io>, String>> {
        Box::pin(async move {
            self.0
                .stream()
                .await
                .map(|s| Box::new(s) as Box<dyn fetch::Io>)
                .map_err(|e| e.to_string())
        })
    }
    fn authority(&self) -> String {
        format!("{ROBOVAST_POD}:80")
    }
}

async fn hash_file(path: &Path) -> Result<String, StepError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?;
        let mut h = crate::results::sha::Sha256State::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.hex())
    })
    .await
    .map_err(|e| StepError::transient(e.to_string()))?
    .map_err(|e| io_err("read", path, e))
}

/// Objects downloaded at once in direct mode.
const DIRECT_PARALLEL: usize = 8;

/// Direct mode: every object of the bucket through the S3 port-forward into the staging
/// directory (`<out>/.<run>.vast-staging/<bucket>/<key>`). An object is complete when its file
/// exists with the listed size; one in progress lives in `<key>.vast-part` and is continued
/// with a ranged GET from its length.
async fn fetch_direct(cx: &StepContext, item: &PlanItem) -> Result<Value, StepError> {
    let out = output_dir(cx)?;
    let mode = display(cx);
    let staging = staging_dir(&out, &item.run);
    let root = staging.join(&item.bucket);
    std::fs::create_dir_all(&root).map_err(|e| io_err("create", &root, e))?;
    let (_forward, client) = results::s3_client(cx).await?;
    let objects = crate::cluster::s3::list_objects(&client, &item.bucket)
        .await
        .map_err(|err| results::classified(err.is_transient(), err))?;
    let total: u64 = objects.iter().map(|o| o.size).sum();
    let done = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let bar = Mutex::new(Progress::bytes(
        &format!("{}  downloading", item.run),
        total,
        0,
        mode,
    ));
    let mut todo = Vec::new();
    for o in &objects {
        let Some(rel) = safe_key(&o.key) else {
            return Err(StepError::permanent(format!(
                "unsafe object key '{}' in bucket '{}'",
                o.key, item.bucket
            )));
        };
        let path = root.join(rel);
        if std::fs::metadata(&path).map(|m| m.len()).ok() == Some(o.size) {
            done.fetch_add(o.size, Ordering::Relaxed);
            continue;
        }
        todo.push((o.clone(), path));
    }
    let results: Vec<Result<(), StepError>> =
        futures::stream::iter(todo.into_iter().map(|(o, path)| {
            let client = client.clone();
            let bucket = item.bucket.clone();
            let done = done.clone();
            let received = received.clone();
            let bar = &bar;
            async move {
                get_object_resumable(&client, &bucket, &o.key, o.size, &path, &received, &|n| {
                    let d = done.fetch_add(n, Ordering::Relaxed) + n;
                    bar.lock().unwrap_or_else(|p| p.into_inner()).update(d);
                })
                .await
            }
        }))
        .buffer_unordered(DIRECT_PARALLEL)
        .collect()
        .await;
    for r in results {
        r?;
    }
    bar.lock()
        .unwrap_or_else(|p| p.into_inner())
        .finish_at(total);
    Ok(json!(RunResult {
        run: item.run.clone(),
        detail: Some(json!({
            "staged": staging.display().to_string(),
            "objects": objects.len(),
            "bytes": total,
            "received": received.load(Ordering::Relaxed),
        })),
        ..Default::default()
    }))
}

/// An S3 key as a relative path, or None when it could leave the directory.
fn safe_key(key: &str) -> Option<PathBuf> {
    let mut p = PathBuf::new();
    for c in key.split('/') {
        match c {
            "" | "." => continue,
            ".." => return None,
            c if c.contains('\\') || c.contains('\0') => return None,
            c => p.push(c),
        }
    }
    (!p.as_os_str().is_empty()).then_some(p)
}

async fn get_object_resumable(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
    path: &Path,
    received: &AtomicU64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), StepError> {
    use tokio::io::AsyncWriteExt;
    let part = PathBuf::from(format!("{}.vast-part", path.display()));
    if let Some(parent) = part.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_err("create", parent, e))?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .await
        .map_err(|e| io_err("open", &part, e))?;
    let mut have = file
        .metadata()
        .await
        .map_err(|e| io_err("inspect", &part, e))?
        .len();
    if have > size {
        file.set_len(0)
            .await
            .map_err(|e| io_err("truncate", &part, e))?;
        have = 0;
    }
    progress(have);
    let mut stalled = 0;
    while have < size {
        let req = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={have}-"));
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(String::from);
                let msg = format!(
                    "downloading {key} from bucket '{bucket}' failed: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                );
                if crate::cluster::s3::permanent_code(code.as_deref()) {
                    return Err(StepError::permanent(msg));
                }
                stalled += 1;
                if stalled >= 5 {
                    return Err(StepError::transient(msg));
                }
                // As `results::fetch` does: a short pause growing with the failures in a row
                // (the S3 client itself does not retry).
                tokio::time::sleep(std::time::Duration::from_millis(100 * stalled * stalled)).await;
                continue;
            }
        };
        let mut body = resp.body;
        let before = have;
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    let take = chunk.len().min((size - have) as usize);
                    file.write_all(&chunk[..take])
                        .await
                        .map_err(|e| io_err("write", &part, e))?;
                    have += take as u64;
                    received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    progress(take as u64);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("{key}: stream broke at byte {have}: {e}");
                    break;
                }
            }
        }
        file.flush().await.map_err(|e| io_err("write", &part, e))?;
        if have == before {
            stalled += 1;
            if stalled >= 5 {
                return Err(StepError::transient(format!(
                    "downloading {key} from bucket '{bucket}' makes no progress"
                )));
            }
        } else {
            stalled = 0;
        }
    }
    file.sync_data()
        .await
        .map_err(|e| io_err("sync", &part, e))?;
    drop(file);
    tokio::fs::rename(&part, path)
        .await
        .map_err(|e| io_err("rename into", path, e))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ExtractCursor {
    /// The results are in place (set right after the rename).
    placed: bool,
}

/// Extracts `<out>/<run>.tar.gz` into `<out>/.<run>.vast-staging/` (path traversal, escaping
/// links and device files rejected), then renames `<staging>/<bucket>` to `<out>/<run>`
/// (with `--force` replacing what was there). Direct mode's staging directory is renamed the
/// same way.
async fn extract_step(cx: &StepContext) -> Result<Value, StepError> {
    let prev = previous(cx, "fetch")?;
    let item: PlanItem = cx.item()?;
    let out = output_dir(cx)?;
    let mode = display(cx);
    let dest = out.join(&item.run);
    let staging = staging_dir(&out, &item.run);
    let mut cursor: ExtractCursor = cx.cursor()?.unwrap_or_default();
    if cursor.placed && dest.is_dir() {
        return Ok(json!(prev));
    }
    let direct = prev.detail.as_ref().and_then(|d| d.get("staged")).is_some();
    let mut files = 0u64;
    if !direct {
        let Some(info) = prev.archive.clone() else {
            return Err(StepError::permanent(format!(
                "no archive of run {} to extract",
                item.run
            )));
        };
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io_err("remove", &staging, e))?;
        }
        let archive = local_archive(&out, &item.run);
        match extract(&archive, &staging, &info, mode).await? {
            Ok(n) => files = n,
            Err(why) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(StepError::permanent(why));
            }
        }
    } else {
        remove_part_files(&staging)?;
    }
    let src = staging.join(&item.bucket);
    if !src.is_dir() {
        std::fs::create_dir_all(&src).map_err(|e| io_err("create", &src, e))?;
    }
    if dest.exists() && !dest.is_dir() {
        // Never moved aside or replaced: it is the user's.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(StepError::permanent(format!(
            "{} exists and is not a directory; move it away (or choose another --output) and resume",
            dest.display()
        )));
    }
    if dest.exists() {
        // Only --force gets here with an existing directory (the command skips it otherwise).
        let old = out.join(format!(".{}.vast-old", item.run));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&dest, &old).map_err(|e| io_err("move aside", &dest, e))?;
        std::fs::rename(&src, &dest).map_err(|e| io_err("rename into", &dest, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&src, &dest).map_err(|e| io_err("rename into", &dest, e))?;
    }
    cursor.placed = true;
    cx.save_cursor(&cursor)?;
    let _ = std::fs::remove_dir_all(&staging);
    if !direct {
        progress::status(mode, &item.run, &format!("extracted  {files} files"));
        if cx.param::<bool>("no_keep_archive")?.unwrap_or(false) {
            let a = local_archive(&out, &item.run);
            let _ = std::fs::remove_file(&a);
        }
    } else {
        progress::status(mode, &item.run, "downloaded (direct)");
    }
    Ok(json!(prev))
}

/// Removes unfinished `.vast-part` files left by direct mode (there are none after success).
fn remove_part_files(dir: &Path) -> Result<(), StepError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            remove_part_files(&p)?;
        } else if p.to_string_lossy().ends_with(".vast-part") {
            std::fs::remove_file(&p).map_err(|err| io_err("remove", &p, err))?;
        }
    }
    Ok(())
}

/// Extracts on a blocking thread with a progress bar; `Ok(Err(why))` for an unsafe or corrupt
/// archive (the run fails, nothing is removed).
async fn extract(
    archive: &Path,
    staging: &Path,
    info: &ArchiveInfo,
    mode: Mode,
) -> Result<Result<u64, String>, StepError> {
    let archive = archive.to_path_buf();
    let staging = staging.to_path_buf();
    let run = info.run.clone();
    let top = info.bucket.clone();
    let total = info.objects;
    let res = tokio::task::spawn_blocking(move || {
        // Entries of the archive (the objects, plus directories): the count stops at the
        // number of objects, the final line says how many files were written.
        let mut bar = Progress::count(&format!("{run}  extracting"), "files", total, 0, mode);
        let mut progress = |entries: u64, _bytes: u64| bar.update(entries.min(total));
        let res = crate::results::extract::extract_safe(&archive, &staging, &top, &mut progress);
        if let Ok(summary) = &res {
            bar.set_total(summary.files);
            bar.finish_at(summary.files);
        }
        res
    })
    .await
    .map_err(|e| StepError::transient(e.to_string()))?;
    use crate::results::extract::ExtractError;
    match res {
        Ok(summary) => Ok(Ok(summary.files)),
        Err(e @ (ExtractError::Unsafe { .. } | ExtractError::Corrupt { .. })) => {
            Ok(Err(format!("archive rejected: {e}")))
        }
        Err(ExtractError::Io { path, source }) => {
            Err(crate::results::io::PathError::new("extract into", &path, source).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_never_leave_the_directory() {
        assert_eq!(safe_key("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(safe_key("./a//b"), Some(PathBuf::from("a/b")));
        assert_eq!(safe_key("../x"), None);
        assert_eq!(safe_key("a/../../x"), None);
        assert_eq!(safe_key("/"), None);
    }
}
