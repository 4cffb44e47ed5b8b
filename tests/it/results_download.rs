//! `download`, `download --direct`, `--remote-compress-only` and `download-cleanup` against
//! vast-sim: results mirror the bucket, the remote copy goes only after extraction, resume to
//! the byte after SIGKILL, port-forward drops and a pod restart, unsafe and corrupt archives
//! rejected with the remote copy kept, active runs never cleaned up, every step idempotent
//! and resumable after a crash at every journal record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vast::engine::{EngineOptions, Outcome};
use vast_sim::config::SimConfig;
use vast_sim::dataplane::DataPlane;

use super::cluster_support::{sha256, start, started_id, text, wait_for_len, Cluster, NS};

/// Every file under `dir` (relative path → bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn results_dir(c: &Cluster) -> PathBuf {
    c.project.join("results")
}

/// The robovast pod's archive directory on the sim's disk.
fn pod_archives(c: &Cluster) -> PathBuf {
    c.pod_data().join("archives")
}

async fn buckets(c: &Cluster) -> Vec<String> {
    vast::cluster::s3::list_buckets(&c.direct_s3().await, "")
        .await
        .unwrap()
}

/// Puts `bytes` as `key` into `bucket` through the sim's direct S3 endpoint.
async fn put_object(c: &Cluster, bucket: &str, key: &str, bytes: Vec<u8>) {
    c.direct_s3()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(bytes.into())
        .send()
        .await
        .unwrap();
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible enough for gzip, fast, deterministic.
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_mirrors_the_bucket_then_removes_the_remote_copy() {
    download_happy_path("rke2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_on_a_gcp_like_setup_with_a_persistent_volume() {
    download_happy_path("gcp").await;
}

async fn download_happy_path(config: &str) {
    let c = start(SimConfig::default()).await;
    let run = c.finished_run(config).await;
    let before = c.bucket(&run).await;
    assert!(
        before.keys().any(|k| k.ends_with("test.xml")),
        "{:?}",
        before.keys()
    );

    let out = c.vast(&["execution", "cluster", "download"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("Downloading the results of 1 run to directory"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{run}  extracted  {} files", before.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains("✓ Download of 1 run completed successfully!"),
        "{stdout}"
    );
    assert!(
        !text(&out.stderr).contains("ERROR"),
        "{}",
        text(&out.stderr)
    );
    let got = files(&results_dir(&c).join(&run));
    assert_eq!(got, before, "the local run directory mirrors the bucket");
    assert!(
        results_dir(&c).join(format!("{run}.tar.gz")).is_file(),
        "archive kept"
    );
    // Only then the remote copy went: bucket and archive.
    assert!(!buckets(&c).await.contains(&run));
    assert!(
        pod_archives(&c).parent().unwrap().join(".vast").is_dir(),
        "{}",
        pod_archives(&c).display()
    );
    assert!(!pod_archives(&c).join(format!("{run}.tar.gz")).exists());
    // Entrypoint scripts keep their exec bits? Their mode is what the bucket had (0644 by
    // default); at least nothing is setuid and every file is readable.
    use std::os::unix::fs::PermissionsExt;
    for f in walk_paths(&results_dir(&c).join(&run)) {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o7000, 0, "{}", f.display());
        assert_ne!(mode & 0o400, 0, "{}", f.display());
    }

    // Nothing left: upstream's message, exit 0.
    let out = c.vast(&["execution", "cluster", "download"]).await;
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("No runs found to download."),
        "{}",
        text(&out.stdout)
    );
}

fn walk_paths(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_paths(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_on_a_minikube_like_setup_and_skip_removal() {
    let c = start(SimConfig::default()).await;
    let run = c.finished_run("minikube").await;
    let before = c.bucket(&run).await;
    let out = c
        .vast(&[
            "execution",
            "cluster",
            "download",
            "--direct",
            "--skip-removal",
            "-o",
            "out",
        ])
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(files(&c.project.join("out").join(&run)), before);
    // --skip-removal: the bucket stays.
    assert!(buckets(&c).await.contains(&run));
    // An existing non-empty directory is skipped unless --force.
    let out = c
        .vast(&["execution", "cluster", "download", "-o", "out"])
        .await;
    assert!(
        text(&out.stdout).contains(&format!("{run}  skipped (already exists)")),
        "{}",
        text(&out.stdout)
    );
    // A user's file where the run's directory goes is never moved or replaced.
    let dest = c.project.join("out").join(&run);
    let aside = c.project.join("out").join("aside");
    std::fs::rename(&dest, &aside).unwrap();
    std::fs::write(&dest, "mine").unwrap();
    let out = c
        .vast(&["execution", "cluster", "download", "-o", "out"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("is not a directory")
            || text(&out.stderr).contains("is not a directory"),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "mine");
    assert!(!c
        .project
        .join("out")
        .join(format!(".{run}.vast-old"))
        .exists());
    std::fs::remove_file(&dest).unwrap();
    std::fs::rename(&aside, &dest).unwrap();
    // --force downloads again (through the archive this time) and replaces it.
    std::fs::write(c.project.join("out").join(&run).join("stale.txt"), "x").unwrap();
    let out = c
        .vast(&["execution", "cluster", "download", "-o", "out", "--force"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(files(&c.project.join("out").join(&run)), before);
    assert!(!buckets(&c).await.contains(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_still_running_are_not_downloadable_and_not_cleaned_up() {
    let mut cfg = SimConfig::default();
    // Pods that run for a long time.
    cfg.pods.job_duration_ms = 600_000;
    let c = start(cfg).await;
    c.setup_cli("rke2").await;
    let out = c.vast(&["execution", "cluster", "run", "-r", "1"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = super::cluster_support::run_id_of(&text(&out.stdout));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = c.vast(&["execution", "cluster", "download"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("Run {run} not downloadable (jobs still running: ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("No runs ready to download. Wait for jobs to finish and try again."),
        "{stdout}"
    );

    let out = c.vast(&["execution", "cluster", "download-cleanup"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(&format!("Refusing to remove '{run}'")),
        "{}",
        text(&out.stderr)
    );
    // A refusal is not reported with a check mark.
    assert!(
        text(&out.stdout).contains("✗ Removed 0 buckets from S3; refused 1 run")
            && !text(&out.stdout).contains("✓"),
        "{}",
        text(&out.stdout)
    );
    assert!(buckets(&c).await.contains(&run));
    let out = c
        .vast(&[
            "execution",
            "cluster",
            "download-cleanup",
            "--force",
            "-i",
            &run,
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("✓ Removed 1 bucket from S3."),
        "{}",
        text(&out.stdout)
    );
    assert!(!buckets(&c).await.contains(&run));
}

/// Builds the archive with `--remote-compress-only`, then lets `tamper` change it in the pod.
async fn compressed(c: &Cluster, run: &str) -> (PathBuf, PathBuf) {
    let out = c
        .vast(&["execution", "cluster", "download", "--remote-compress-only"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("✓ Compressed 1 run on remote pod."),
        "{}",
        text(&out.stdout)
    );
    let archive = pod_archives(c).join(format!("{run}.tar.gz"));
    let status = pod_archives(c)
        .parent()
        .unwrap()
        .join(".vast")
        .join(format!("{run}.archive.json"));
    assert!(archive.is_file() && status.is_file());
    (archive, status)
}

/// A gzip'ed tar with the given (name, symlink target or None, data) members.
fn tarball(members: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, link, data) in members {
        let mut h = tar::Header::new_gnu();
        match link {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_link_name(target).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
            }
        }
        h.set_mode(0o644);
        // Names tar::Builder would refuse ('..') are written into the header directly.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Replaces the pod's archive by `bytes`, and (if `restamp`) the archiver's status with the
/// matching size and SHA-256, as if the archiver had produced it.
fn replace_archive(archive: &Path, status: &Path, bytes: &[u8], restamp: bool) {
    std::fs::write(archive, bytes).unwrap();
    if restamp {
        let mut st: Value = serde_json::from_slice(&std::fs::read(status).unwrap()).unwrap();
        st["result"]["size"] = json!(bytes.len());
        st["result"]["sha256"] = json!(sha256(bytes));
        std::fs::write(status, serde_json::to_vec(&st).unwrap()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_or_corrupt_archives_are_rejected_and_the_remote_copy_is_kept() {
    let c = start(SimConfig::default()).await;
    let run = c.finished_run("rke2").await;
    let (archive, status) = compressed(&c, &run).await;
    let outside = c.project.join("evil");

    // 1. Bytes that do not match what the archiver reported: verification fails (twice: the
    // download is retried once), nothing is extracted, the remote copy stays, exit 1.
    let good = std::fs::read(&archive).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    replace_archive(&archive, &status, &bad, false);
    let out = c.vast(&["execution", "cluster", "download"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("verification failed"), "{stdout}");
    assert!(
        stdout.contains("Remote archive kept at /data/archives/"),
        "{stdout}"
    );
    assert!(!results_dir(&c).join(&run).exists());
    assert!(archive.is_file() && buckets(&c).await.contains(&run));

    // 2. Path traversal, an escaping symlink, an absolute path: rejected, nothing written
    // outside, the remote copy stays.
    for members in [
        vec![
            (format!("{run}/ok.txt"), None, &b"ok"[..]),
            (format!("{run}/../../evil"), None, &b"x"[..]),
        ],
        vec![
            (format!("{run}/link"), Some("../../.."), &b""[..]),
            (format!("{run}/link/evil"), None, &b"x"[..]),
        ],
        vec![("/tmp/evil-abs".to_string(), None, &b"x"[..])],
    ] {
        let m: Vec<(&str, Option<&str>, &[u8])> = members
            .iter()
            .map(|(n, l, d)| (n.as_str(), *l, *d))
            .collect();
        replace_archive(&archive, &status, &tarball(&m), true);
        let _ = std::fs::remove_file(results_dir(&c).join(format!("{run}.tar.gz")));
        let out = c.vast(&["execution", "cluster", "download"]).await;
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{stdout}\n{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("archive rejected: unsafe archive entry"),
            "{stdout}"
        );
        assert!(!outside.exists() && !Path::new("/tmp/evil-abs").exists());
        assert!(!results_dir(&c).join(&run).exists());
        assert!(archive.is_file() && buckets(&c).await.contains(&run));
    }

    // 3. The real archive again: the download succeeds and only then removes it.
    replace_archive(&archive, &status, &good, true);
    let _ = std::fs::remove_file(results_dir(&c).join(format!("{run}.tar.gz")));
    let out = c.vast(&["execution", "cluster", "download"]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(results_dir(&c).join(&run).is_dir());
    assert!(!archive.exists() && !buckets(&c).await.contains(&run));
}

/// `download -o DIR` where the archive cannot be written in DIR (here `<run>.tar.gz.part` is a
/// directory: EISDIR, which is what root gets where an unprivileged user gets EACCES; a
/// read-only file system gives EROFS the same way) fails at once with a permanent error
/// naming the path, instead of retrying it 20 times over 7 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_output_fails_the_download_at_once_naming_the_path() {
    let c = start(SimConfig::default()).await;
    let run = c.finished_run("rke2").await;
    let out = c.tmp.path().join("read-only-ish");
    let part = out.join(format!("{run}.tar.gz.part"));
    std::fs::create_dir_all(&part).unwrap();
    let log = c.tmp.path().join("download.stderr");
    let t0 = Instant::now();
    let mut child = c
        .command(&[
            "execution",
            "cluster",
            "download",
            "-o",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "download still retrying after 90 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&part.display().to_string()) && err.contains("Is a directory"),
        "{err}"
    );
    // One attempt of the fetch step, failed as permanent: the run's item failed for good
    // (the other runs, if any, would go on), the run succeeded with failures.
    let id = started_id(&err, "download-");
    let show = c.vast(&["runs", "show", &id, "--json"]).await;
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    let fetch = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "fetch" && s["child"] == 0)
        .cloned()
        .unwrap();
    assert_eq!(fetch["status"], "item_failed", "{fetch}");
    assert_eq!(fetch["attempts"], 1, "{fetch}");
    assert_eq!(fetch["errors"][0]["kind"], "permanent", "{fetch}");
    // Nothing was removed: the remote copy stays for the next try.
    assert!(buckets(&c).await.contains(&run));
}

/// Issue 12: a run that fails is its own map item. With two runs, one whose archive bytes are
/// corrupt: that run fails (FAILED line, remote copy kept) while the other is downloaded,
/// extracted and removed; the download exits 1 and its run ends succeeded with failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_run_does_not_stop_the_others() {
    let c = start(SimConfig::default()).await;
    let bad = c.finished_run("rke2").await;
    let out = c
        .vast(&["execution", "cluster", "run", "--follow", "-r", "1"])
        .await;
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    let good = started_id(&text(&out.stderr), "run-");
    let out = c
        .vast(&["execution", "cluster", "download", "--remote-compress-only"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let archive = pod_archives(&c).join(format!("{bad}.tar.gz"));
    let status = pod_archives(&c)
        .parent()
        .unwrap()
        .join(".vast")
        .join(format!("{bad}.archive.json"));
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    replace_archive(&archive, &status, &bytes, false);

    let out = c.vast(&["execution", "cluster", "download"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{bad}  FAILED:")) && stdout.contains("verification failed"),
        "{stdout}"
    );
    assert!(!stdout.contains(&format!("{good}  FAILED")), "{stdout}");
    assert!(results_dir(&c).join(&good).is_dir(), "{stdout}\n{stderr}");
    assert!(!results_dir(&c).join(&bad).exists());
    let left = buckets(&c).await;
    assert!(left.contains(&bad) && !left.contains(&good), "{left:?}");
    assert!(archive.is_file(), "the failed run's remote archive is kept");
    let id = started_id(&stderr, "download-");
    let show = c.vast(&["runs", "show", &id, "--json"]).await;
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1 item failed"),
        "{v}"
    );
}

fn download_params(c: &Cluster, run: &str, out: &Path, direct: bool) -> Value {
    json!({
        "context": null,
        "namespace": NS,
        "state_dir": c.state.display().to_string(),
        "output": out.display().to_string(),
        "runs": [{"run": run, "bucket": run}],
        "force_archive": false,
        "skip_removal": false,
        "keep_remote_archive": direct,
        "no_keep_archive": false,
        "direct": direct,
        "remove_after": "extract",
        "report_from": "remove",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_download_step_is_idempotent_and_survives_a_crash_at_every_record() {
    let c = start(SimConfig::default()).await;
    let mut runs = Vec::new();
    c.setup_cli("rke2").await;
    for _ in 0..2 {
        let out = c
            .vast(&["execution", "cluster", "run", "--follow", "-r", "1"])
            .await;
        assert!(out.status.success(), "run: {}", text(&out.stderr));
        runs.push(started_id(&text(&out.stderr), "run-"));
    }
    // Run every step twice.
    let (a, b) = (&runs[0], &runs[1]);
    let want_a = c.bucket(a).await;
    let out_a = c.tmp.path().join("twice");
    let twice = EngineOptions {
        run_twice: true,
        ..Default::default()
    };
    let (_, o) = c
        .execute("download", &download_params(&c, a, &out_a, false), twice)
        .await;
    assert_eq!(o, Outcome::Succeeded);
    assert_eq!(files(&out_a.join(a)), want_a);
    assert!(!buckets(&c).await.contains(a));

    // Crash after every journal record of an uninterrupted download of `b`, then resume.
    // The bucket is gone only at the very end, so each round restores it from a copy.
    let want_b = c.bucket(b).await;
    let (_, o) = {
        let out_b = c.tmp.path().join("reference");
        c.execute(
            "download",
            &download_params(&c, b, &out_b, false),
            EngineOptions::default(),
        )
        .await
    };
    assert_eq!(o, Outcome::Succeeded);
    let dir = vast::store::StateDir::new(c.state.clone());
    let last = dir
        .list()
        .unwrap()
        .into_iter()
        .filter(|r| r.id.starts_with("download-"))
        .map(|r| r.id)
        .max()
        .unwrap();
    let records = dir
        .open_run_for_reading(&last)
        .unwrap()
        .load()
        .unwrap()
        .events;
    assert!(records > 8, "{records}");
    for n in 1..records {
        c.restore_bucket(b, &want_b).await;
        let out_b = c.tmp.path().join(format!("crash-{n}"));
        let opts = EngineOptions {
            crash_after: Some(n),
            ..Default::default()
        };
        let (id, o) = c
            .execute("download", &download_params(&c, b, &out_b, false), opts)
            .await;
        if o != Outcome::Succeeded {
            let o = c.resume_with(&id, c.resources()).await;
            assert_eq!(o, Outcome::Succeeded, "crash after record {n}");
        }
        assert_eq!(files(&out_b.join(b)), want_b, "crash after record {n}");
        assert!(!buckets(&c).await.contains(b), "crash after record {n}");
        assert!(!out_b.join(format!(".{b}.vast-staging")).exists());
    }
}

/// A run whose bucket holds `mib` MiB of incompressible data, archived in the pod.
async fn big_run(c: &Cluster, mib: usize) -> (String, Vec<u8>) {
    let run = c.finished_run("rke2").await;
    let data = random_bytes(mib << 20, 7);
    put_object(c, &run, "big/rosbag.db3", data.clone()).await;
    let t = Instant::now();
    compressed(c, &run).await;
    eprintln!(
        "archive of {mib} MiB built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    (run, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_download_resumes_to_the_byte() {
    let c = start(SimConfig::default()).await;
    let (run, data) = big_run(&c, 260).await;
    let archive_size = std::fs::metadata(pod_archives(&c).join(format!("{run}.tar.gz")))
        .unwrap()
        .len();
    let part = results_dir(&c).join(format!("{run}.tar.gz.part"));
    let sent_before = DataPlane::http_bytes_sent();
    let mut id: Option<String> = None;
    let mut kills = 0;
    let mut refetch = Vec::new();
    let mut rng_state = 12345u64;
    let mut next = |lo: u64, hi: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        lo + rng_state % (hi - lo)
    };
    loop {
        let mut cmd = match &id {
            None => c.command(&["execution", "cluster", "download"]),
            Some(id) => c.command(&["resume", id.as_str()]),
        };
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        if kills < 3 {
            // Kill once the transfer is under way, at a random point of it.
            let target = archive_size * next(10, 90) / 100;
            let what = format!("transfer never reached {target}");
            wait_for_len(&part, target.max(1), 120, &what).await;
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
                .await
                .unwrap();
            if id.is_none() {
                id = Some(started_id(&text(&out.stderr), "download-"));
            }
            // What vast had received (on disk) and what its journaled cursor keeps: the
            // difference is fetched again.
            let on_disk = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            let kept = fetch_offset(&c, id.as_deref().unwrap());
            assert!(kept <= on_disk);
            refetch.push(on_disk - kept);
            kills += 1;
            continue;
        }
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        // `vast resume` ends with the command's summary too.
        assert!(
            text(&out.stdout).contains("✓ Download of 1 run completed successfully!"),
            "{}",
            text(&out.stdout)
        );
        break;
    }
    let got = std::fs::read(results_dir(&c).join(&run).join("big/rosbag.db3")).unwrap();
    assert_eq!(
        sha256(&got),
        sha256(&data),
        "byte-identical after {kills} kills"
    );
    let sent = DataPlane::http_bytes_sent() - sent_before;
    let resent = sent.saturating_sub(archive_size);
    eprintln!(
        "archive {archive_size} bytes; received again per kill: {refetch:?}; the server sent {resent} bytes more than the archive over {kills} kills ({:.1} MiB per kill, socket and websocket buffers in flight included)",
        resent as f64 / kills as f64 / 1048576.0
    );
    // Each kill costs at most one checkpoint interval (plus the 1 MiB write buffer).
    for r in &refetch {
        assert!(
            *r <= vast::results::fetch::CHECKPOINT + (1 << 20),
            "a kill cost {r} bytes: {refetch:?}"
        );
    }
    // And the transfer never restarted from zero.
    assert!(resent < archive_size / 2, "sent {sent} for {archive_size}");
}

/// The journaled offset of run `id`'s fetch cursor (0 without one).
fn fetch_offset(c: &Cluster, id: &str) -> u64 {
    let dir = vast::store::StateDir::new(c.state.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = loop {
        match dir.open_run_for_reading(id).and_then(|s| s.load()) {
            Ok(st) => break st,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let i = state
        .definition
        .steps
        .iter()
        .position(|s| s.name == "fetch")
        .unwrap();
    let cursor = state.nodes[i]
        .children
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|c| c.cursor.clone());
    cursor
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.pointer("/fetch/offset").and_then(Value::as_u64))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_port_forwards_and_a_pod_restart_do_not_restart_the_transfer() {
    let c = start(SimConfig::default()).await;
    let (run, data) = big_run(&c, 64).await;
    let archive_size = std::fs::metadata(pod_archives(&c).join(format!("{run}.tar.gz")))
        .unwrap()
        .len();
    // Every HTTP port-forward stream is cut after 5 MiB.
    let faults = json!({"seed": 3, "portforward": {"drop_after_bytes": 5 << 20, "ports": [80]}});
    c.sim.faults().set(serde_json::from_value(faults).unwrap());
    let sent_before = DataPlane::http_bytes_sent();
    let mut cmd = c.command(&["execution", "cluster", "download"]);
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Restart the pod (containers restart, the volume is kept) in the middle of the transfer.
    let part = results_dir(&c).join(format!("{run}.tar.gz.part"));
    wait_for_len(&part, archive_size / 2, 120, "transfer stalled").await;
    let status = c
        .sim_post(&format!("/sim/pods/{NS}/robovast/restart?wipe=false"))
        .await;
    assert!(status.contains(" 20"), "{status}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = std::fs::read(results_dir(&c).join(&run).join("big/rosbag.db3")).unwrap();
    assert_eq!(sha256(&got), sha256(&data));
    let sent = DataPlane::http_bytes_sent() - sent_before;
    let drops = archive_size / (5 << 20) + 2;
    // What vast received over all its connections (the fetch step's output): a transfer that
    // restarted after a drop or the pod restart would have received half the archive again.
    // (The server-side count also holds what the sim's relay buffered when a stream was cut,
    // which grows with the machine's load: printed, not asserted.)
    let id = started_id(&text(&out.stderr), "download-");
    let state = vast::store::StateDir::new(c.state.clone())
        .open_run_for_reading(&id)
        .unwrap()
        .load()
        .unwrap();
    let i = state
        .definition
        .steps
        .iter()
        .position(|s| s.name == "fetch")
        .unwrap();
    let output: Value = serde_json::from_str(
        state.nodes[i].children.as_ref().unwrap()[0]
            .output
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    let received = output
        .pointer("/detail/received")
        .and_then(Value::as_u64)
        .unwrap();
    eprintln!(
        "archive {archive_size}, vast received {received}, the server sent {sent} with ~{drops} stream drops and a pod restart"
    );
    assert!(
        received < archive_size + (8 << 20),
        "received {received} for {archive_size}: the transfer restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_cut_short_by_a_pod_restart_is_rebuilt_never_taken_as_complete() {
    let c = start(SimConfig::default()).await;
    let run = c.finished_run("rke2").await;
    let data = random_bytes(96 << 20, 11);
    put_object(&c, &run, "big/rosbag.db3", data.clone()).await;
    let mut cmd = c.command(&["execution", "cluster", "download"]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Restart the pod while the archiver writes `.partial`: its process dies with the pod.
    let partial = pod_archives(&c).join(format!("{run}.tar.gz.partial"));
    wait_for_len(&partial, 8 << 20, 60, "the archiver never started writing").await;
    let status = c
        .sim_post(&format!("/sim/pods/{NS}/robovast/restart?wipe=false"))
        .await;
    assert!(status.contains(" 20"), "{status}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let got = std::fs::read(results_dir(&c).join(&run).join("big/rosbag.db3")).unwrap();
    assert_eq!(
        sha256(&got),
        sha256(&data),
        "the rebuilt archive holds the whole object"
    );
    assert!(!partial.exists());
}

/// Runs `operation` once per journal record of a reference run, crashing after record n and
/// resuming; `prepare` restores the world before each round, `check` compares it after.
async fn crash_at_every_record<P, C, PF, CF>(
    c: &Cluster,
    operation: &str,
    params: &Value,
    mut prepare: P,
    mut check: C,
) where
    P: FnMut() -> PF,
    PF: std::future::Future<Output = ()>,
    C: FnMut(u64) -> CF,
    CF: std::future::Future<Output = ()>,
{
    prepare().await;
    let (id, o) = c.execute(operation, params, EngineOptions::default()).await;
    assert_eq!(o, Outcome::Succeeded);
    check(0).await;
    let dir = vast::store::StateDir::new(c.state.clone());
    let records = dir
        .open_run_for_reading(&id)
        .unwrap()
        .load()
        .unwrap()
        .events;
    for n in 1..records {
        prepare().await;
        let opts = EngineOptions {
            crash_after: Some(n),
            ..Default::default()
        };
        let (id, o) = c.execute(operation, params, opts).await;
        if o != Outcome::Succeeded {
            assert_eq!(
                c.resume_with(&id, c.resources()).await,
                Outcome::Succeeded,
                "after record {n}"
            );
        }
        check(n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_compress_and_download_cleanup_steps_are_idempotent_and_resumable() {
    let c = start(SimConfig::default()).await;
    let run = c.finished_run("rke2").await;
    let content = c.bucket(&run).await;
    let params = json!({
        "context": null, "namespace": NS,
        "state_dir": c.state.display().to_string(),
        "runs": [{"run": run, "bucket": run}],
        "report_from": "archive",
    });
    let archive = pod_archives(&c).join(format!("{run}.tar.gz"));
    let twice = EngineOptions {
        run_twice: true,
        ..Default::default()
    };
    // remote-compress: twice over, then crashed at every record; the archive always ends
    // complete (its members are the bucket's keys).
    let (_, o) = c.execute("remote-compress", &params, twice.clone()).await;
    assert_eq!(o, Outcome::Succeeded);
    let members = |p: &Path| -> Vec<String> {
        let f = std::fs::File::open(p).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut v: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let want: Vec<String> = content.keys().map(|k| format!("{run}/{k}")).collect();
    assert_eq!(members(&archive), want);
    let a = archive.clone();
    crash_at_every_record(
        &c,
        "remote-compress",
        &json!({
            "context": null, "namespace": NS,
            "state_dir": c.state.display().to_string(),
            "runs": [{"run": run, "bucket": run}],
            "report_from": "archive", "force_archive": true,
        }),
        || async {},
        |n| {
            let (a, want) = (a.clone(), want.clone());
            async move { assert_eq!(members(&a), want, "after record {n}") }
        },
    )
    .await;

    // download-cleanup: twice over, then crashed at every record (the bucket restored first).
    let (_, o) = c.execute("download-cleanup", &params, twice).await;
    assert_eq!(o, Outcome::Succeeded);
    assert!(!buckets(&c).await.contains(&run));
    let cref = &c;
    let (r1, r2) = (run.clone(), run.clone());
    let content2 = content.clone();
    crash_at_every_record(
        &c,
        "download-cleanup",
        &params,
        move || {
            let (r, content) = (r1.clone(), content2.clone());
            async move { cref.restore_bucket(&r, &content).await }
        },
        move |n| {
            let r = r2.clone();
            async move { assert!(!buckets(cref).await.contains(&r), "after record {n}") }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_only_serves_the_archives_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let c = start(SimConfig::default()).await;
    let run = c.finished_run("rke2").await;
    let (archive, _) = compressed(&c, &run).await;
    let mut cmd = c.command(&["execution", "cluster", "download", "--port-forward-only"]);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for l in BufReader::new(stdout).lines() {
            let l = l.unwrap();
            let done = l.starts_with("Press Ctrl+C");
            seen.push(l);
            if done {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    assert!(
        lines[0].starts_with("Port-forward active — http://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "Downloadable archives (1):"),
        "{lines:?}"
    );
    let url = lines
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("http://")
                .filter(|u| u.ends_with(".tar.gz"))
        })
        .unwrap_or_else(|| panic!("{lines:?}"))
        .to_string();
    let (host, path) = url.split_once('/').unwrap();
    let (path, host) = (format!("/{path}"), host.to_string());
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&host).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        all[split..].to_vec()
    })
    .await
    .unwrap();
    assert_eq!(sha256(&body), sha256(&std::fs::read(&archive).unwrap()));
    // Task state (logs, a Drive session URI) is not served: it lives outside the directory.
    let state = pod_archives(&c).parent().unwrap().join(".vast");
    assert!(state.join(format!("{run}.archive.json")).is_file());
    let addr = c.sim.dataplane().endpoint(NS, "robovast", 80).unwrap();
    let path = format!("/.vast/{run}.archive.json");
    let head = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        all.lines().next().unwrap_or_default().to_string()
    })
    .await
    .unwrap();
    assert!(head.contains("404"), "{head}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
