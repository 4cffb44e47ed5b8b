//! What `download` and `upload-to-share` share: which runs are ready (availability from the
//! run record and the cluster), the plan of a results run, building or reusing a run's archive
//! in the pod (`results.archive`), removing the remote copy once the results are safe
//! (`results.remove`), and the per-run summary (`results.report`).
//!
//! Per-run failures (an archive that cannot be built, a failed verification, an unsafe
//! archive) are permanent step errors of that run's map item; the workflows' maps say
//! `on_item_failure: continue`, so the engine records the item as failed, the other runs go
//! on, later steps skip that run, the report lists it (`cx.failed_items()`) and the run ends
//! succeeded with failures (the command exits 1). Transient trouble (API errors, dropped
//! streams) is a step error and retried.
//!
//! Polling an in-pod task is bounded ([`TaskWatch`]): a task whose state and progress do not
//! change for [`TASK_STALL`] ends the attempt (the engine's retry re-attaches, its policy
//! bounds the whole), and so do [`MAX_UNSEEN_STARTS`] starts in a row after which the task
//! never showed up and [`MAX_STARTS_PER_ATTEMPT`] starts in all.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use super::base::classified;
use super::base::{env, kube_err, register_steps, sleep, ROBOVAST_POD};
use super::runs::{self, JobState, RunRecord};
use crate::cluster::portforward::PortForward;
use crate::cluster::s3;
use crate::console;
use crate::engine::{Registry, StepContext, StepError};
use crate::manifests::job::label_safe;
use crate::pod::{self, PodError, PodScripts};
use crate::progress::{self, Mode, Progress};

pub fn register(r: &mut Registry) {
    register_steps!(r;
        "results.check" => check,
        "results.plan" => plan,
        "results.archive" => archive,
        "results.remove" => remove,
        "results.report" => report,
        "results.remove-bucket" => remove_bucket,
    );
}

/// How progress is shown in this process (a resource: not persisted, so a resumed run shows
/// it the way the resuming terminal can).
#[derive(Debug, Clone, Copy)]
pub struct Display(pub Mode);

pub fn display(cx: &StepContext) -> Mode {
    cx.resource::<Display>().map(|d| d.0).unwrap_or(Mode::Lines)
}

/// One run of a results operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    pub run: String,
    pub bucket: String,
}

/// Whether a run's results can be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// Jobs still going (counts), or a state nobody can know (reason).
    NotReady {
        running: usize,
        pending: usize,
        unknown: usize,
        reason: Option<String>,
    },
}

/// Classifies the run of bucket `bucket`: its Jobs in the cluster (label `run-id`) and the
/// run's record (every Job it created, the outcomes observed). A Job of the record that is
/// neither in the cluster nor has an observed outcome is unknown, and an unknown run is not
/// ready (upstream counted it as finished).
pub fn availability(bucket: &str, jobs: &[&Job], record: Option<&RunRecord>) -> Availability {
    let mut running = 0;
    let mut pending = 0;
    let mut listed = std::collections::BTreeSet::new();
    for j in jobs {
        if let Some(n) = &j.metadata.name {
            listed.insert(n.clone());
        }
        match runs::job_state(j) {
            JobState::Running => running += 1,
            JobState::Pending => pending += 1,
            JobState::Succeeded | JobState::Failed => {}
        }
    }
    let (unknown, reason) = match record {
        Some(r) => {
            let unknown = r
                .jobs
                .iter()
                .filter(|n| !listed.contains(*n) && !r.finished.contains_key(*n))
                .count();
            let reason = if !r.submitted && r.jobs.is_empty() {
                Some("its Jobs were never created".to_string())
            } else if unknown > 0 {
                Some(format!(
                    "{} vanished from the cluster before their outcome was seen",
                    crate::console::plural(unknown as u64, "Job")
                ))
            } else {
                None
            };
            (unknown, reason)
        }
        None if jobs.is_empty() => (
            0,
            Some(format!(
                "no Jobs of '{bucket}' in the cluster and no record of them here; name it with --run-id to take it anyway"
            )),
        ),
        None => (0, None),
    };
    if running == 0 && pending == 0 && reason.is_none() {
        Availability::Ready
    } else {
        Availability::NotReady {
            running,
            pending,
            unknown,
            reason,
        }
    }
}

/// The availability of every `run-*` bucket, from one Job listing and the run records.
pub async fn available_runs(
    client: &kube::Client,
    namespace: &str,
    state_dir: &Path,
    buckets: &[String],
) -> Result<Vec<(String, Availability)>, kube::Error> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let all = api
        .list(&ListParams::default().labels(&crate::cluster::runs::selector(None)))
        .await?;
    let mut by_run: BTreeMap<String, Vec<&Job>> = BTreeMap::new();
    for j in &all.items {
        if let Some(r) = j.metadata.labels.as_ref().and_then(|l| l.get("run-id")) {
            by_run.entry(r.clone()).or_default().push(j);
        }
    }
    let records: BTreeMap<String, RunRecord> = RunRecord::load_all(state_dir)
        .into_iter()
        .map(|(r, _)| (label_safe(&r.run_id), r))
        .collect();
    Ok(buckets
        .iter()
        .map(|b| {
            let jobs = by_run.get(b).cloned().unwrap_or_default();
            (b.clone(), availability(b, &jobs, records.get(b)))
        })
        .collect())
}

/// The robovast pod is Running and mounts the scripts of this vast version (applied here;
/// the kubelet may take a minute to update the mount).
async fn check(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    if cx.param::<bool>("direct")?.unwrap_or(false) {
        // Direct mode needs only the pod's S3 endpoint.
        let pods: Api<Pod> = Api::namespaced(e.client.clone(), &e.namespace);
        return match pods
            .get_opt(ROBOVAST_POD)
            .await
            .map_err(|err| kube_err("reading pod 'robovast'", &err))?
        {
            Some(_) => Ok(json!({"direct": true})),
            None => Err(StepError::permanent(
                "Required pod 'robovast' does not exist!",
            )),
        };
    }
    let files = pod::scripts(&plugin_scripts(cx)?);
    let want = pod::version(&files).to_string();
    crate::cluster::objects::apply(&e.client, &pod::configmap(&files), &e.namespace)
        .await
        .map_err(|err| super::base::apply_err(&err))?;
    let scripts = scripts(cx)?;
    let limit = Duration::from_secs(cx.param::<u64>("scripts_timeout_s")?.unwrap_or(180));
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let pods: Api<Pod> = Api::namespaced(e.client.clone(), &e.namespace);
        let p = pods
            .get_opt(ROBOVAST_POD)
            .await
            .map_err(|err| kube_err("reading pod 'robovast'", &err))?
            .ok_or_else(|| StepError::permanent("Required pod 'robovast' does not exist!"))?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase != "Running" {
            return Err(StepError::transient(format!(
                "Transfer pod 'robovast' exists but is not running (status: {phase})!"
            )));
        }
        let mounted = scripts.mounted_version().await.map_err(pod_err)?;
        if mounted.as_deref() == Some(want.as_str()) {
            return Ok(json!({"scripts": want}));
        }
        if started.elapsed() >= limit {
            return Err(StepError::permanent(format!(
                "the robovast pod does not mount the archiver scripts of this vast version (want {want}, found {}) after {} s; re-create it with `vast execution cluster setup --force`",
                mounted.as_deref().unwrap_or("none"),
                limit.as_secs()
            )));
        }
        if !said {
            tracing::info!("Waiting for the pod to mount the archiver scripts (version {want})...");
            said = true;
        }
        sleep(cx, Duration::from_secs(2)).await?;
    }
}

/// Plugin scripts the run needs in the pod (upload-to-share with a plugin provider).
fn plugin_scripts(cx: &StepContext) -> Result<Vec<(String, String)>, StepError> {
    Ok(cx
        .param::<Vec<(String, String)>>("plugin_scripts")?
        .unwrap_or_default())
}

/// The runs, from the parameters (chosen by the command before the run started).
async fn plan(cx: &StepContext) -> Result<Value, StepError> {
    let runs: Vec<PlanItem> = match cx.param::<Vec<PlanItem>>("runs") {
        Ok(Some(r)) => r,
        // A campaign takes the results of its own run (its parameter `runs` is a count).
        _ if cx.param::<bool>("campaign")?.unwrap_or(false) => {
            let id = cx.run_id().as_str().to_string();
            vec![PlanItem {
                bucket: super::run::bucket(&id),
                run: id,
            }]
        }
        _ => Vec::new(),
    };
    Ok(serde_json::to_value(runs).unwrap_or_default())
}

pub fn scripts(cx: &StepContext) -> Result<PodScripts, StepError> {
    let e = env(cx)?;
    Ok(PodScripts::new(
        Api::namespaced(e.client.clone(), &e.namespace),
        ROBOVAST_POD,
    ))
}

pub fn pod_err(e: PodError) -> StepError {
    if e.is_transient() {
        StepError::transient(e.to_string())
    } else {
        StepError::permanent(e.to_string())
    }
}

/// How long an in-pod task may run with neither its state nor its progress changing before
/// an attempt gives up waiting for it.
pub const TASK_STALL: Duration = Duration::from_secs(30 * 60);
/// Starts in a row after which the started task never showed up in its state file.
pub const MAX_UNSEEN_STARTS: u32 = 3;
/// Starts of the task in one attempt (a task that keeps dying or keeps leaving an unusable
/// result is not started for ever; the engine's retry policy bounds the attempts).
pub const MAX_STARTS_PER_ATTEMPT: u32 = 6;

/// The bounds of one attempt's polling of an in-pod task (see the module doc).
pub struct TaskWatch {
    what: &'static str,
    last: Option<String>,
    since: std::time::Instant,
    unseen_starts: u32,
    starts: u32,
}

impl TaskWatch {
    pub fn new(what: &'static str) -> Self {
        TaskWatch {
            what,
            last: None,
            since: std::time::Instant::now(),
            unseen_starts: 0,
            starts: 0,
        }
    }

    /// A status of the task: progress when its state or progress changed since the last one;
    /// an error when nothing changed for [`TASK_STALL`]. `ours`: the task is the one this step
    /// started last (it did show up).
    pub fn observe(&mut self, st: &pod::TaskStatus, ours: bool) -> Result<(), StepError> {
        if ours {
            self.unseen_starts = 0;
        }
        let now = format!(
            "{} {:?} {}",
            st.state,
            st.token,
            st.progress
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default()
        );
        if self.last.as_deref() != Some(now.as_str()) {
            self.last = Some(now);
            self.since = std::time::Instant::now();
            return Ok(());
        }
        if self.since.elapsed() >= TASK_STALL {
            return Err(StepError::transient(format!(
                "{} in the pod made no progress for {} s (state {}, progress {})",
                self.what,
                self.since.elapsed().as_secs(),
                st.state,
                st.progress
                    .as_ref()
                    .map(Value::to_string)
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Before starting the task (again): an error once [`MAX_UNSEEN_STARTS`] starts in a row
    /// never showed up, or after [`MAX_STARTS_PER_ATTEMPT`] starts.
    pub fn starting(&mut self) -> Result<(), StepError> {
        if self.unseen_starts >= MAX_UNSEEN_STARTS {
            return Err(StepError::transient(format!(
                "{} was started {} times in the pod and never showed up in its state file",
                self.what, self.unseen_starts
            )));
        }
        if self.starts >= MAX_STARTS_PER_ATTEMPT {
            return Err(StepError::transient(format!(
                "{} was started {} times in the pod in this attempt without a usable result",
                self.what, self.starts
            )));
        }
        self.unseen_starts += 1;
        self.starts += 1;
        self.last = None;
        Ok(())
    }
}

/// A run's archive in the pod, as the archiver reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    pub run: String,
    pub bucket: String,
    /// Path in the pod.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub objects: u64,
}

/// The output of a per-run step: the run's state after it (a run that failed has no output:
/// its item failed, see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub run: String,
    /// Read only: how runs created before per-run failures were engine data recorded a failed
    /// run (a resumed old run must not take it for a success); never written now.
    #[serde(default, skip_serializing)]
    pub failed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// The result of `step` for this child's run (same index: every results map is over `plan`;
/// the engine runs a child only when the same item succeeded in the maps before it).
/// Other items' entries may be null (their run failed: the engine skips this item only when
/// its own entry is); a failure recorded the old way is this item's permanent error.
pub fn previous(cx: &StepContext, step: &str) -> Result<RunResult, StepError> {
    let all: Vec<Option<RunResult>> = cx.output(step)?;
    let i = cx.index().unwrap_or(0) as usize;
    let r = all
        .get(i)
        .cloned()
        .flatten()
        .ok_or_else(|| StepError::permanent(format!("no output of {step} for item {i}")))?;
    match &r.failed {
        Some(why) => Err(StepError::permanent(why.clone())),
        None => Ok(r),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ArchiveCursor {
    /// Token of the archiver task this step started (a resume recognises it).
    token: Option<String>,
    /// Builds started by this step (at most the step's `builds` budget).
    builds: u32,
}

/// Builds `<run>.tar.gz` of the run's bucket in the pod, or reuses a complete one (with
/// `force`, the first attempt rebuilds it). A half-built archive is never complete: only a
/// task that succeeded, whose file has the reported size, counts.
async fn archive(cx: &StepContext) -> Result<Value, StepError> {
    let item: PlanItem = cx.item()?;
    if cx.param::<bool>("direct")?.unwrap_or(false) {
        return Ok(json!(RunResult {
            run: item.run.clone(),
            ..Default::default()
        }));
    }
    let mode = display(cx);
    let scripts = scripts(cx)?;
    let state = pod::state_path(&format!("{}.archive", item.run));
    let path = pod::archive_path(&item.run);
    let force = cx.param::<bool>("force_archive")?.unwrap_or(false);
    let mut cursor: ArchiveCursor = cx.cursor()?.unwrap_or_default();
    let max_builds = super::base::budget(cx, "builds", 3);
    // The compress phase as a bar of objects (created at the first progress seen).
    let mut bar: Option<Progress> = None;
    let mut watch = TaskWatch::new("the archiver");
    loop {
        let st = scripts.status(&state).await.map_err(pod_err)?;
        let ours = cursor.token.is_some() && st.token == cursor.token;
        watch.observe(&st, ours && st.state != "absent")?;
        let usable = !force || ours;
        if st.state == "succeeded" && usable {
            if let Some(info) = complete_archive(&scripts, &item, &path, &st).await? {
                if cursor.builds > 0 {
                    // Every build ends with its final line, also one done before the first poll.
                    let b = bar.get_or_insert_with(|| compress_bar(&item.run, info.objects, mode));
                    b.set_total(info.objects);
                    b.set_message(&format!("{} written", progress::size(info.size)));
                    b.finish_at(info.objects);
                }
                if cursor.builds == 0 {
                    progress::status(mode, &item.run, "reusing the existing remote archive");
                } else {
                    progress::status(
                        mode,
                        &item.run,
                        &format!(
                            "compressed to {}.tar.gz ({})",
                            item.run,
                            progress::size(info.size)
                        ),
                    );
                }
                return Ok(json!(RunResult {
                    run: item.run.clone(),
                    archive: Some(info),
                    ..Default::default()
                }));
            }
        }
        if st.is_running() {
            if let Some(total) = st.progress_u64("total_objects") {
                let b = bar.get_or_insert_with(|| compress_bar(&item.run, total, mode));
                b.set_total(total);
                b.set_message(&format!(
                    "{} written",
                    progress::size(st.progress_u64("written").unwrap_or(0))
                ));
                b.update(st.progress_u64("objects").unwrap_or(0));
            }
            sleep(cx, Duration::from_millis(500)).await?;
            continue;
        }
        if st.state == "failed" && ours && cursor.builds >= max_builds {
            return Err(StepError::permanent(format!(
                "Failed to create archive for run {}: {}",
                item.run,
                st.error.as_deref().map(pod::last_line).unwrap_or_default()
            )));
        }
        // Nothing usable: (re)build. The token goes to the cursor before the start, so a
        // crash right after it finds the task again instead of starting a second one.
        watch.starting()?;
        let token = format!("{}-{}", cx.run_id().as_str(), cursor.builds + 1);
        cursor.token = Some(token.clone());
        cursor.builds += 1;
        cx.save_cursor(&cursor)?;
        let command = vec![
            "python".to_string(),
            format!("{}/archive.py", pod::SCRIPTS_DIR),
            item.bucket.clone(),
            path.clone(),
        ];
        tracing::debug!("{}: starting the archiver ({token})", item.run);
        progress::status(mode, &item.run, "streaming S3 to tar.gz...");
        scripts
            .start(&state, &token, None, &command)
            .await
            .map_err(pod_err)?;
    }
}

/// The compress phase of run `run`: objects of `total` put into the archive.
fn compress_bar(run: &str, total: u64, mode: Mode) -> Progress {
    Progress::count(&format!("{run}  compressing"), "objects", total, 0, mode)
}

/// The archive of a succeeded task, if its file is there with the reported size.
async fn complete_archive(
    scripts: &PodScripts,
    item: &PlanItem,
    path: &str,
    st: &pod::TaskStatus,
) -> Result<Option<ArchiveInfo>, StepError> {
    let Some(result) = &st.result else {
        return Ok(None);
    };
    let (Some(size), Some(sha)) = (
        result.get("size").and_then(Value::as_u64),
        result.get("sha256").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    let out = scripts
        .run(&["wc".to_string(), "-c".to_string(), path.to_string()])
        .await
        .map_err(pod_err)?;
    let on_disk = out
        .stdout_text()
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok());
    if out.code != 0 || on_disk != Some(size) {
        return Ok(None);
    }
    Ok(Some(ArchiveInfo {
        run: item.run.clone(),
        bucket: item.bucket.clone(),
        path: path.to_string(),
        size,
        sha256: sha.to_string(),
        objects: result.get("objects").and_then(Value::as_u64).unwrap_or(0),
    }))
}

/// Removes the remote copy of every run whose results are safe (the `after` step's output
/// says ok): the archive in the pod unless `keep_remote_archive`, the bucket unless
/// `skip_removal`. Runs that failed keep everything.
async fn remove(cx: &StepContext) -> Result<Value, StepError> {
    let after: String = cx
        .param("remove_after")?
        .unwrap_or_else(|| "extract".to_string());
    let prev = previous(cx, &after)?;
    let mode = display(cx);
    let skip_removal = cx.param::<bool>("skip_removal")?.unwrap_or(false);
    let keep_archive = cx.param::<bool>("keep_remote_archive")?.unwrap_or(false);
    let item: PlanItem = cx.item()?;
    if !keep_archive {
        let path = pod::archive_path(&item.run);
        let state = pod::state_path(&format!("{}.archive", item.run));
        scripts(cx)?
            .remove(&[
                path.clone(),
                format!("{path}.sha256"),
                format!("{path}.partial"),
                state.clone(),
                format!("{state}.progress"),
                format!("{state}.result"),
                format!("{state}.log"),
            ])
            .await
            .map_err(pod_err)?;
    }
    if !skip_removal {
        let (_forward, client) = s3_client(cx).await?;
        let n = s3::remove_bucket(&client, &item.bucket)
            .await
            .map_err(|err| classified(err.is_transient(), err))?;
        tracing::info!("Removed bucket '{}' ({n} objects) from S3", item.bucket);
    }
    if !skip_removal || !keep_archive {
        progress::status(
            mode,
            &item.run,
            match (keep_archive, skip_removal) {
                (false, false) => "remote archive and bucket removed",
                (false, true) => "remote archive removed",
                _ => "bucket removed",
            },
        );
    }
    Ok(json!(prev))
}

/// An S3 client through a fresh port-forward to the robovast pod (the forward lives as long
/// as the returned value).
pub async fn s3_client(cx: &StepContext) -> Result<(PortForward, aws_sdk_s3::Client), StepError> {
    let e = env(cx)?;
    s3::forwarded(&e.client, &e.namespace, ROBOVAST_POD)
        .await
        .map_err(|err| classified(err.is_transient(), err))
}

/// The per-run summary, printed (so `vast resume` prints it too): each failed run with its
/// error (the engine's failed items), then the totals; output `{"ok": n, "failed": n, "runs":
/// [...], "failures": [...]}`. The exit code comes from the run's outcome, not from here.
async fn report(cx: &StepContext) -> Result<Value, StepError> {
    let from: String = cx.param("report_from")?.unwrap_or_else(|| "remove".into());
    // Runs that failed have no output (null); their errors are the engine's failed items.
    let results: Vec<Option<RunResult>> = cx.output(&from)?;
    let plan: Vec<PlanItem> = cx.output("plan").unwrap_or_default();
    let direct = cx.param::<bool>("direct")?.unwrap_or(false);
    let upload = cx.param::<String>("share_type")?.is_some();
    let ok = results.iter().flatten().count();
    let mut failed = 0;
    let mut failures = Vec::new();
    // In the plan's order (then by step), as the runs were listed.
    let mut items: Vec<_> = cx.failed_items().iter().collect();
    items.sort_by_key(|f| f.index);
    for f in items {
        failed += 1;
        let run = plan
            .get(f.index as usize)
            .map(|p| p.run.clone())
            .unwrap_or_else(|| format!("item {}", f.index));
        if upload && f.step == "archive" {
            console::error(format!(
                "Failed to create archive for run {run}, skipping upload."
            ));
        }
        let why = &f.error;
        console::result(format!("{run}  FAILED: {why}"));
        // The remote archive stays when the bytes fetched from it were bad or unusable.
        if (f.step == "extract" && !direct)
            || why.contains("verification")
            || why.contains("unsafe")
        {
            console::result(format!(
                "{run}  Remote archive kept at {} for inspection",
                pod::archive_path(&run)
            ));
        }
        failures.push(json!({"run": run, "step": f.step, "failed": why}));
    }
    // The summary line (here, so `vast resume` prints it too). Runs the command skipped
    // before the run started (already downloaded) count as done, as upstream counts them.
    let before: u64 = cx.param("skipped_before")?.unwrap_or(0);
    match cx.param::<String>("summary")?.as_deref() {
        Some("download") if failed == 0 => console::result(format!(
            "✓ Download of {} completed successfully!",
            console::plural(ok as u64 + before, "run")
        )),
        Some("download") => console::result(format!(
            "✗ Download of {failed} of {} failed ({} succeeded)",
            console::plural(failed as u64 + ok as u64 + before, "run"),
            ok as u64 + before
        )),
        Some("compress") => console::result(format!(
            "✓ Compressed {} on remote pod.",
            console::plural(ok as u64, "run")
        )),
        _ => {}
    }
    Ok(json!({"ok": ok, "skipped": 0, "failed": failed, "runs": results, "failures": failures}))
}

/// download-cleanup: removes one bucket (objects page by page, then the bucket).
async fn remove_bucket(cx: &StepContext) -> Result<Value, StepError> {
    let item: PlanItem = cx.item()?;
    let (_forward, client) = s3_client(cx).await?;
    let n = s3::remove_bucket(&client, &item.bucket)
        .await
        .map_err(|err| classified(err.is_transient(), err))?;
    console::status(format!(
        "Removed '{}' from S3 ({})",
        item.bucket,
        console::plural(n as u64, "object")
    ));
    Ok(json!({"run": item.run, "bucket": item.bucket, "objects": n}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, token: &str, progress: Value) -> pod::TaskStatus {
        pod::TaskStatus {
            state: state.into(),
            token: Some(token.into()),
            alive: state == "running",
            progress: Some(progress),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_that_never_shows_up_is_not_started_for_ever() {
        let mut w = TaskWatch::new("the archiver");
        let absent = pod::TaskStatus {
            state: "absent".into(),
            ..Default::default()
        };
        for _ in 0..MAX_UNSEEN_STARTS {
            w.observe(&absent, false).unwrap();
            w.starting().unwrap();
        }
        let e = w.starting().unwrap_err();
        assert!(e.message.contains("never showed up"), "{e}");
        // A start that showed up resets the count; the number of starts is still bounded.
        let mut w = TaskWatch::new("the upload");
        for i in 0..MAX_STARTS_PER_ATTEMPT {
            w.starting().unwrap();
            w.observe(&status("failed", &format!("t{i}"), json!({})), true)
                .unwrap();
        }
        let e = w.starting().unwrap_err();
        assert!(e.message.contains("without a usable result"), "{e}");
    }

    #[test]
    fn a_task_making_progress_is_not_stalled() {
        let mut w = TaskWatch::new("the archiver");
        for n in 0..100u64 {
            w.observe(&status("running", "t", json!({"written": n})), true)
                .unwrap();
        }
        assert_eq!(w.unseen_starts, 0);
    }
}
