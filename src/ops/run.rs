//! The `run` operation's steps (`workflows/run.yaml`): the robovast pod checked, earlier runs'
//! Jobs removed (`--cleanup`), the configurations generated into the run's work directory, the
//! Job list planned (Jobs of this run that already exist are adopted, never re-created),
//! `out_template` uploaded to the run's bucket (resumable per file and per part), one map
//! child per Job creating it, and with `--follow` the Jobs watched until all finished. The
//! watch of an attempt gives up after [`WATCH_MAX_ERRORS`] errors (or [`WATCH_MAX_ERROR_TIME`])
//! without progress: a re-list as such is not progress, a changed Job state or count is.
//!
//! Parameters: `context`, `namespace`, `state_dir`, `vast_file`, `vast_sha256` (the `.vast`
//! text the run started with: a changed file stops the run instead of creating different
//! Jobs), `config` (only this one), `runs`, `log_tree`, `follow`, `cleanup`, `cluster_config`,
//! `created_at`, `poll_ms`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::base::{classified, env, io_err, kube_err, register_steps, sleep, ROBOVAST_POD};
use super::runs::{self, render_stats, stats_of, RunRecord, Watch};
use crate::cluster::s3;
use crate::engine::retry::FailureBudget;
use crate::engine::{Registry, StepContext, StepError};
use crate::manifests::cluster_config::cluster_config;
use crate::manifests::job::{
    base_job_name, job_name, label_safe, render_job, render_job_attempt, render_job_value,
    JobContext,
};
use crate::progress::Progress;
use crate::project::configs::Configuration;
use crate::project::template::{self, Mode};
use crate::project::vast_file::VastFile;

pub fn register(r: &mut Registry) {
    register_steps!(r;
        "run.check" => check,
        "run.cleanup-previous" => cleanup_previous,
        "run.prepare" => prepare,
        "run.plan" => plan,
        "run.upload" => upload,
        "run.create-job" => create_job,
        "run.follow" => follow,
    );
}

/// SHA-256 (hex) of a `.vast` file's text.
pub fn vast_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The project as the run sees it, loaded once per process and shared by every step (the map
/// children render their Job from it).
#[derive(Default)]
pub struct ProjectCache(tokio::sync::OnceCell<Arc<Loaded>>);

pub struct Loaded {
    pub vast: VastFile,
    /// The configurations of the run (`--config` applied).
    pub configs: Vec<Configuration>,
    pub runs: u32,
}

pub async fn project(cx: &StepContext) -> Result<Arc<Loaded>, StepError> {
    let cache = cx.resource::<ProjectCache>()?;
    cache
        .0
        .get_or_try_init(|| async {
            let path: String = cx
                .param("vast_file")?
                .ok_or_else(|| StepError::permanent("parameter 'vast_file' is missing"))?;
            let vast = VastFile::load(Path::new(&path))
                .map_err(|e| StepError::permanent(e.to_string()))?;
            if let Some(want) = cx.param::<String>("vast_sha256")? {
                if vast_sha256(&vast.text) != want {
                    return Err(StepError::permanent(format!(
                        "{path} changed since this run started; restore it to resume the run, \
                         or start a new run"
                    )));
                }
            }
            let mut configs =
                crate::project::generate(&vast).map_err(|e| StepError::permanent(e.to_string()))?;
            if let Some(only) = cx.param::<String>("config")? {
                configs.retain(|c| c.name == only);
            }
            if configs.is_empty() {
                return Err(StepError::permanent("No scenario configs generated."));
            }
            let runs = cx.param::<u32>("runs")?.unwrap_or(vast.execution.runs);
            Ok(Arc::new(Loaded {
                vast,
                configs,
                runs,
            }))
        })
        .await
        .cloned()
}

pub fn state_dir(cx: &StepContext) -> Result<PathBuf, StepError> {
    cx.param::<String>("state_dir")?
        .map(PathBuf::from)
        .ok_or_else(|| StepError::permanent("parameter 'state_dir' is missing"))
}

fn template_dir(cx: &StepContext) -> Result<PathBuf, StepError> {
    Ok(runs::work_dir(&state_dir(cx)?, cx.run_id().as_str()).join("out_template"))
}

/// The run's bucket (and `run-id` label): the run id, label-safe.
pub fn bucket(run_id: &str) -> String {
    label_safe(run_id)
}

/// The robovast pod must be Running (waits up to `pod_timeout_s`, default 60 s).
async fn check(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), &e.namespace);
    let limit = Duration::from_secs(cx.param::<u64>("pod_timeout_s")?.unwrap_or(60));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let pod = pods
            .get_opt(ROBOVAST_POD)
            .await
            .map_err(|err| kube_err("reading pod 'robovast'", &err))?;
        let phase = match &pod {
            None => return Err(StepError::permanent("Pod 'robovast' does not exist")),
            Some(p) => p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
        };
        if phase == "Running" {
            return Ok(json!({"pod": "Running"}));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError::transient(format!(
                "Pod is not running (status: {phase})"
            )));
        }
        sleep(cx, Duration::from_millis(250)).await?;
    }
}

/// `--cleanup`: the Jobs and pods of every earlier run (never this run's).
async fn cleanup_previous(cx: &StepContext) -> Result<Value, StepError> {
    if !cx.param::<bool>("cleanup")?.unwrap_or(false) {
        return Ok(json!({"skipped": true}));
    }
    let e = env(cx)?;
    let sel = format!(
        "{},run-id!={}",
        crate::cluster::runs::selector(None),
        bucket(cx.run_id().as_str())
    );
    let n = crate::cluster::runs::delete_jobs(&e.client, &e.namespace, &sel)
        .await
        .map_err(|err| kube_err("deleting earlier runs' Jobs", &err))?;
    crate::cluster::runs::delete_pods(&e.client, &e.namespace, &sel)
        .await
        .map_err(|err| kube_err("deleting earlier runs' pods", &err))?;
    tracing::info!(
        "Deleted {} of earlier runs.",
        crate::console::plural(n as u64, "Job")
    );
    Ok(json!({"deleted": n}))
}

/// `out_template/` of the run in its work directory, written to a temporary directory and
/// renamed into place (the same bytes every time: `created_at` is a run parameter).
async fn prepare(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let p = project(cx).await?;
    let out = template_dir(cx)?;
    let created: String = cx.param("created_at")?.unwrap_or_default();
    let cluster: Option<String> = cx.param("cluster_config")?;
    let parent = out
        .parent()
        .ok_or_else(|| StepError::permanent("work directory has no parent"))?
        .to_path_buf();
    let tmp = parent.join(".out_template.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|err| io_err("remove", &tmp, err))?;
    }
    std::fs::create_dir_all(&parent).map_err(|err| io_err("create", &parent, err))?;
    template::write_out_template(&tmp, &p.vast, &p.configs, Mode::Cluster, &created)
        .map_err(|err| StepError::permanent(err.to_string()))?;
    if let Some(cfg) = cluster.as_deref().and_then(|c| cluster_config(c).ok()) {
        let ep = tmp.join("entrypoint.sh");
        let text = std::fs::read_to_string(&ep).map_err(|err| io_err("read", &ep, err))?;
        template::write_file(
            &ep,
            template::with_instance_type(&text, cfg.instance_type_command).as_bytes(),
            true,
            io_err,
        )?;
    }
    let info = json!({
        "context": e.context,
        "namespace": e.namespace,
        "cluster_config": cluster,
    });
    let info: serde_yaml::Value =
        serde_yaml::to_value(&info).map_err(|err| StepError::permanent(err.to_string()))?;
    let exec = template::execution_yaml(&p.vast, p.runs, &created, info)
        .map_err(|err| StepError::permanent(err.to_string()))?;
    let ex = tmp.join("execution.yaml");
    std::fs::write(&ex, exec).map_err(|err| io_err("write", &ex, err))?;
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|err| io_err("replace", &out, err))?;
    }
    std::fs::rename(&tmp, &out).map_err(|err| io_err("rename into", &out, err))?;
    Ok(json!({"configs": p.configs.len(), "runs": p.runs, "dir": out.display().to_string()}))
}

/// One Job of the plan (short keys: 10,000 of them are journaled).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedJob {
    /// Job name.
    pub n: String,
    /// Index of the configuration.
    pub c: usize,
    /// Run number.
    pub r: u32,
    /// Already exists in the cluster (adopted).
    #[serde(default)]
    pub x: bool,
}

/// Every Job of the run, run-number-major as upstream; the Jobs of this run already in the
/// cluster (listed by the `run-id` label) are marked adopted. Writes the run's record.
async fn plan(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let p = project(cx).await?;
    let run_id = cx.run_id().as_str();
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), &e.namespace);
    let existing: std::collections::BTreeSet<String> = jobs
        .list_metadata(&ListParams::default().labels(&crate::cluster::runs::selector(Some(run_id))))
        .await
        .map_err(|err| kube_err("listing this run's Jobs", &err))?
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    // The typed form of one Job checks the document create-job sends as JSON.
    if let Some(first) = p.configs.first() {
        render_job(&job_context(cx, run_id, &e, &p)?, first, 0)
            .map_err(|err| StepError::permanent(err.to_string()))?;
    }
    let mut out = Vec::with_capacity(p.configs.len() * p.runs as usize);
    for r in 0..p.runs {
        for (c, conf) in p.configs.iter().enumerate() {
            let n = job_name(run_id, &conf.name, r);
            let x = existing.contains(&n);
            out.push(PlannedJob { n, c, r, x });
        }
    }
    if !existing.is_empty() {
        tracing::info!(
            "Adopting {} of this run that already exist.",
            crate::console::plural(existing.len() as u64, "Job")
        );
    }
    tracing::info!(
        "Creating {} with {} each (ID: {run_id})...",
        crate::console::plural(p.configs.len() as u64, "config"),
        crate::console::plural(p.runs as u64, "run")
    );
    RunRecord {
        run_id: run_id.to_string(),
        context: e.context.clone(),
        namespace: e.namespace.clone(),
        jobs: out.iter().map(|j| j.n.clone()).collect(),
        ..Default::default()
    }
    .save(&state_dir(cx)?)?;
    serde_json::to_value(out).map_err(|err| StepError::permanent(err.to_string()))
}

/// `out_template/` to the run's bucket through the port-forward supervisor; the cursor holds
/// the multipart uploads in progress, present objects are skipped.
async fn upload(cx: &StepContext) -> Result<Value, StepError> {
    let dir = template_dir(cx)?;
    let bucket = bucket(cx.run_id().as_str());
    let (_forward, client) = super::results::s3_client(cx).await?;
    tracing::info!("Uploading config files to S3 bucket '{bucket}'...");
    s3::ensure_bucket(&client, &bucket)
        .await
        .map_err(|err| classified(err.is_transient(), err))?;
    let cursor: s3::UploadCursor = cx.cursor()?.unwrap_or_default();
    let sink = |c: &s3::UploadCursor| {
        if let Err(err) = cx.save_cursor(c) {
            tracing::warn!("{err}");
        }
    };
    let summary = s3::upload_dir_resumable(&client, &bucket, &dir, cursor, &sink)
        .await
        .map_err(|err| classified(err.is_transient(), err))?;
    cx.progress(summary.files() as u64, summary.files() as u64);
    Ok(json!({"bucket": bucket, "uploaded": summary.uploaded, "skipped": summary.skipped}))
}

/// Creates one Job; one that already exists and carries this run's `run-id` label is adopted
/// (a Job of that name from elsewhere is a permanent error: never overwritten).
async fn create_job(cx: &StepContext) -> Result<Value, StepError> {
    let item: PlannedJob = cx.item()?;
    if item.x {
        return Ok(json!({"n": item.n, "adopted": true}));
    }
    let e = env(cx)?;
    let p = project(cx).await?;
    let run_id = cx.run_id().as_str();
    let conf = p
        .configs
        .get(item.c)
        .ok_or_else(|| StepError::permanent(format!("no configuration #{} in the plan", item.c)))?;
    let ctx = job_context(cx, run_id, &e, &p)?;
    let job = render_job_value(&ctx, conf, item.r, 1)
        .map_err(|err| StepError::permanent(err.to_string()))?;
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), &e.namespace);
    match crate::cluster::objects::create_raw(&e.client, jobs.resource_url(), &job).await {
        Ok(()) => Ok(json!({"n": item.n})),
        Err(err) if crate::cluster::error::is_already_exists(&err) => {
            adopt(&jobs, &item.n, run_id).await?;
            Ok(json!({"n": item.n, "adopted": true}))
        }
        Err(err) => Err(kube_err(format!("creating Job '{}'", item.n), &err)),
    }
}

/// What every Job of the run is rendered with (the run's parameters and project).
fn job_context<'a>(
    cx: &StepContext,
    run_id: &'a str,
    e: &'a super::base::ClusterEnv,
    p: &'a Loaded,
) -> Result<JobContext<'a>, StepError> {
    Ok(JobContext {
        run_id,
        namespace: &e.namespace,
        execution: &p.vast.execution,
        context: e.context.as_deref(),
        total_jobs: p.configs.len() * p.runs as usize,
        log_tree: cx.param::<bool>("log_tree")?.unwrap_or(false),
        spot: cx.param::<bool>("spot")?.unwrap_or(false),
    })
}

async fn adopt(jobs: &Api<Job>, name: &str, run_id: &str) -> Result<(), StepError> {
    let existing = jobs
        .get_opt(name)
        .await
        .map_err(|err| kube_err(format!("reading Job '{name}'"), &err))?;
    let Some(j) = existing else {
        // Deleted since (e.g. finished and TTL-deleted): it existed, so it ran.
        return Ok(());
    };
    let label = j
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("run-id"))
        .cloned()
        .unwrap_or_default();
    if label == bucket(run_id) {
        Ok(())
    } else {
        Err(StepError::permanent(format!(
            "a Job named '{name}' already exists and belongs to run '{label}', not to this run"
        )))
    }
}

/// Errors of the Job watch without progress after which a `--follow` attempt gives up (the
/// engine retries the step with its own backoff).
const WATCH_MAX_ERRORS: u32 = 30;
/// ... or the time over which they may spread.
const WATCH_MAX_ERROR_TIME: Duration = Duration::from_secs(10 * 60);

/// Seconds from the run's first start (`created_at`, when the command created it) to `now`:
/// the total duration of a run's statistics counts every process that executed it, not only
/// the one that resumed it. None when `created_at` is missing or unreadable.
pub fn total_duration(created_at: Option<&str>, now: jiff::Timestamp) -> Option<f64> {
    let start: jiff::Timestamp = created_at?.parse().ok()?;
    let secs = now.duration_since(start).as_secs_f64();
    (secs >= 0.0).then_some(secs)
}

/// `--follow`: watches the run's Jobs until every run has a verdict, recording each outcome
/// in the run's record as it is seen, so Jobs deleted by `ttlSecondsAfterFinished` stay
/// counted and a 404 is never an error. A Job that ends `failed` or `lost` leaves its
/// evidence in the bucket ([`super::evidence`]); a run whose latest attempt is `lost`
/// (including a Job that vanished unobserved) is re-submitted as its next attempt, up to
/// `execution.retries` times ([`resubmit`]: the attempt is written to the record before its
/// Job is created, and a 409 is adoption, so a crash anywhere repeats nothing). Prints the
/// statistics block, then deletes the run's Jobs and pods. Watch errors are bounded by a
/// [`FailureBudget`] that only progress resets (an event of a live watch, or a change in the
/// Jobs known: listed, unfinished, present, outcomes), never the watcher's `Init` before a
/// re-list. With a notifier, a heartbeat every `notify_every_s` and a `stalled` event when no
/// Job started or finished for `stall_timeout_s`.
async fn follow(cx: &StepContext) -> Result<Value, StepError> {
    let jobs: Vec<Value> = cx.output("create-job")?;
    tracing::info!("All {} jobs created. Starting execution...", jobs.len());
    let e = env(cx)?;
    let sd = state_dir(cx)?;
    let run_id = cx.run_id().as_str().to_string();
    let loaded = RunRecord::load(&sd, &run_id).unwrap_or_else(|err| {
        tracing::warn!("the run's record is unreadable, starting a new one: {err}");
        None
    });
    let mut record = loaded.unwrap_or_else(|| RunRecord {
        run_id: run_id.clone(),
        namespace: e.namespace.clone(),
        context: e.context.clone(),
        ..Default::default()
    });
    record.submitted = true;
    record.save(&sd)?;
    if !cx.param::<bool>("follow")?.unwrap_or(false) {
        return Ok(json!({"detached": true}));
    }
    let p = project(cx).await?;
    let retries = p.vast.execution.retries;
    let index = job_index(cx.run_id().as_str(), &p);
    if record.jobs.is_empty() {
        record.jobs = index.keys().cloned().collect();
    }
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let tick = Duration::from_millis(cx.param::<u64>("poll_ms")?.unwrap_or(1000).max(10));
    let started = std::time::Instant::now();
    let first_start: Option<String> = cx.param("created_at")?;
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), &e.namespace);
    // One list, then a watch (re-listed by kube-runtime after a 410), instead of listing
    // every Job every second: the API server's load does not grow with polling.
    let stream = watcher(
        jobs.clone(),
        // Pages of 250: the first list of 10,000 Jobs is never held whole (constant memory), and
        // few enough requests that the continue token stays valid while the Jobs churn.
        watcher::Config::default()
            .labels(&crate::cluster::runs::selector(Some(&run_id)))
            .page_size(250),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    let mut w = Watch::default();
    let mut last_remaining = usize::MAX;
    let mut last_save = std::time::Instant::now();
    let mut dirty = false;
    let mut ticker = tokio::time::interval(tick);
    let mut pulse = Pulse::new(cx)?;
    // Jobs whose failure or loss was just recorded: evidence, then maybe a re-submission.
    let mut ended: Vec<Job> = Vec::new();
    let mut s3c: super::evidence::LazyS3 = None;
    // Errors since the last progress: kube-runtime re-lists after an error and announces it
    // with an `Init` event, so an API server that fails every list yields Init, error, Init,
    // error, ... Only a change in what is known resets the budget, never a re-list as such.
    let mut budget = FailureBudget::new(WATCH_MAX_ERRORS, WATCH_MAX_ERROR_TIME);
    // Runs with a verdict of all runs, with ok/fail/lost counts (a bar on a terminal, lines
    // at 10 % or 10 s otherwise, log records with -v), refreshed at most every 250 ms.
    let mode = super::results::display(cx);
    let mut bar: Option<Progress> = None;
    let mut last_bar = std::time::Instant::now();
    let unknown = loop {
        let before = w.known(&record);
        let mut seen = |w: &mut Watch, record: &mut RunRecord, j: &Job| {
            if w.seen(record, j) {
                let name = j.metadata.name.as_deref().unwrap_or_default();
                let outcome = record.finished.get(name).map(|r| r.outcome);
                if outcome == Some(runs::JobOutcome::Succeeded) {
                    tracing::debug!("Job {name} succeeded.");
                }
                let bad = outcome.is_some_and(|o| o != runs::JobOutcome::Succeeded);
                if bad {
                    ended.push(j.clone());
                }
                true
            } else {
                false
            }
        };
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::Init)) => {
                    w.relist = Some(Default::default());
                }
                Some(Ok(watcher::Event::InitApply(j))) => {
                    dirty |= seen(&mut w, &mut record, &j);
                }
                Some(Ok(watcher::Event::Apply(j))) => {
                    // An event of a live watch: the watch works.
                    budget.progress();
                    dirty |= seen(&mut w, &mut record, &j);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(names) = w.relist.take() {
                        w.present = names;
                        w.open.retain(|n| w.present.contains(n));
                    }
                    w.listed = true;
                }
                Some(Ok(watcher::Event::Delete(j))) => {
                    budget.progress();
                    dirty |= seen(&mut w, &mut record, &j);
                    if let Some(n) = &j.metadata.name {
                        w.deleted(n);
                    }
                }
                Some(Err(err)) => {
                    use kube::runtime::watcher::Error as W;
                    let api = match &err {
                        W::InitialListFailed(k) | W::WatchStartFailed(k) | W::WatchFailed(k) => Some(k),
                        _ => None,
                    };
                    if let Some(k) = api.filter(|k| !crate::cluster::error::classify(k).is_transient()) {
                        return Err(kube_err("watching this run's Jobs", k));
                    }
                    let text = match api {
                        Some(k) => crate::cluster::error::message(k),
                        None => err.to_string(),
                    };
                    if let Err(spent) = budget.failure() {
                        return Err(StepError::transient(format!(
                            "watching this run's Jobs: {spent}; last error: {text}"
                        )));
                    }
                    tracing::warn!(
                        "watching this run's Jobs: {text} (retrying; {} of {WATCH_MAX_ERRORS} errors without progress)",
                        budget.failures()
                    );
                    continue;
                }
                None => return Err(StepError::transient("the watch of this run's Jobs ended")),
            },
            _ = ticker.tick() => {}
            _ = cx.cancel_token().cancelled() => {
                record.save(&sd)?;
                return Err(StepError::cancelled());
            }
        }
        if w.known(&record) != before {
            budget.progress();
        }
        for j in std::mem::take(&mut ended) {
            let Some(name) = j.metadata.name.clone() else {
                continue;
            };
            let mut rec = match record.finished.get(&name) {
                Some(r) => r.clone(),
                None => continue,
            };
            super::evidence::keep(
                &e.client,
                &e.namespace,
                &bucket(&run_id),
                &j,
                &mut rec,
                &mut s3c,
            )
            .await;
            match &rec.outcome {
                runs::JobOutcome::Lost => tracing::warn!(
                    "Job {name} lost: {}",
                    rec.reason.as_deref().unwrap_or("unknown")
                ),
                _ => tracing::debug!(
                    "Job {name} failed: {}",
                    rec.reason.as_deref().unwrap_or("unknown")
                ),
            }
            let lost = rec.outcome == runs::JobOutcome::Lost;
            record.finished.insert(name.clone(), rec);
            dirty = true;
            if lost {
                let (base, k) = base_job_name(&name);
                if record.attempt_of(base) == k && k <= retries {
                    let base = base.to_string();
                    let created =
                        resubmit(cx, &run_id, &e, &p, &index, &mut record, &sd, &base, k + 1)
                            .await?;
                    w.present.insert(created.clone());
                    w.open.insert(created);
                }
            }
        }
        // O(1) per event: the vanished runs (a walk over every run) are computed only when
        // nothing is open any more.
        if !w.listed {
            continue;
        }
        let open = w.open.len();
        let total = record.jobs.len();
        cx.progress((total - open.min(total)) as u64, total as u64);
        if bar.is_none() || open == 0 || last_bar.elapsed() >= Duration::from_millis(250) {
            last_bar = std::time::Instant::now();
            let v = record.verdicts();
            let done = v.decided() as u64;
            let b = bar.get_or_insert_with(|| {
                Progress::count(&run_id, "jobs finished", total as u64, done, mode)
            });
            b.set_total(total as u64);
            b.set_message(&v.summary());
            b.update(done);
        }
        pulse.beat(&record, &w).await;
        if dirty && (open == 0 || last_save.elapsed() >= Duration::from_secs(2)) {
            record.save(&sd)?;
            last_save = std::time::Instant::now();
            dirty = false;
        }
        if open == 0 && ended.is_empty() {
            // Runs whose latest Job vanished without an observed outcome have no verdict.
            let gone = w.vanished(&record);
            let mut again = false;
            for (base, latest) in &gone {
                let mut r = runs::JobRecord::new(runs::JobOutcome::Lost);
                r.reason = Some("vanished before its outcome was observed".into());
                record.record(latest, r);
                let k = record.attempt_of(base);
                if k <= retries {
                    let created =
                        resubmit(cx, &run_id, &e, &p, &index, &mut record, &sd, base, k + 1)
                            .await?;
                    w.present.insert(created.clone());
                    w.open.insert(created);
                    again = true;
                }
            }
            record.save(&sd)?;
            if !again {
                break gone.len();
            }
            continue;
        }
        if open != last_remaining {
            tracing::debug!("Waiting for {open} out of {total} jobs to finish...");
            last_remaining = open;
        }
    };
    record.save(&sd)?;
    if let Some(b) = bar.as_mut() {
        let v = record.verdicts();
        b.set_message(&v.summary());
        b.finish_at(v.decided() as u64);
    }
    drop(bar);
    tracing::info!("All jobs finished.");
    let total = total_duration(first_start.as_deref(), jiff::Timestamp::now())
        .unwrap_or_else(|| started.elapsed().as_secs_f64());
    let stats = stats_of(&record, unknown, total);
    let sel = crate::cluster::runs::selector(Some(&run_id));
    crate::cluster::runs::delete_jobs(&e.client, &e.namespace, &sel)
        .await
        .map_err(|err| kube_err("deleting this run's Jobs", &err))?;
    crate::cluster::runs::delete_pods(&e.client, &e.namespace, &sel)
        .await
        .map_err(|err| kube_err("deleting this run's pods", &err))?;
    tracing::info!("Cleaned up jobs.");
    crate::console::result(render_stats(&stats));
    serde_json::to_value(&stats).map_err(|err| StepError::permanent(err.to_string()))
}

/// Every first Job name of the run → (configuration index, run number).
pub fn job_index(run_id: &str, p: &Loaded) -> std::collections::BTreeMap<String, (usize, u32)> {
    let mut out = std::collections::BTreeMap::new();
    for r in 0..p.runs {
        for (c, conf) in p.configs.iter().enumerate() {
            out.insert(job_name(run_id, &conf.name, r), (c, r));
        }
    }
    out
}

/// Re-submits the run whose first Job is `base` as attempt `attempt`: the attempt is written
/// to the record first, then its Job is created (a 409 for a Job of this run is adoption).
/// Returns the new Job's name.
#[allow(clippy::too_many_arguments)]
pub async fn resubmit(
    cx: &StepContext,
    run_id: &str,
    e: &super::base::ClusterEnv,
    p: &Loaded,
    index: &std::collections::BTreeMap<String, (usize, u32)>,
    record: &mut RunRecord,
    sd: &Path,
    base: &str,
    attempt: u32,
) -> Result<String, StepError> {
    let (c, r) = *index.get(base).ok_or_else(|| {
        StepError::permanent(format!("Job '{base}' is not a run of this project"))
    })?;
    let cur = record.attempt_of(base);
    if cur < attempt {
        record.attempts.insert(base.to_string(), attempt);
        record.save(sd)?;
    }
    let name = runs::attempt_name(base, attempt);
    let conf = p
        .configs
        .get(c)
        .ok_or_else(|| StepError::permanent(format!("no configuration #{c} in the plan")))?;
    let ctx = job_context(cx, run_id, e, p)?;
    let job = render_job_attempt(&ctx, conf, r, attempt)
        .map_err(|err| StepError::permanent(err.to_string()))?;
    if job.metadata.name.as_deref() != Some(name.as_str()) {
        return Err(StepError::permanent(format!(
            "attempt {attempt} of '{base}' would be named {:?}, not '{name}'",
            job.metadata.name
        )));
    }
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), &e.namespace);
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => {}
        Err(err) if crate::cluster::error::is_already_exists(&err) => {
            adopt(&jobs, &name, run_id).await?;
        }
        Err(err) => return Err(kube_err(format!("creating Job '{name}'"), &err)),
    }
    tracing::info!("Re-submitted {base} as attempt {attempt} ({name}).");
    Ok(name)
}

/// Heartbeats and stall events of a followed run (a notifier resource and the run's
/// `notify_every_s` / `stall_timeout_s` parameters).
struct Pulse {
    url: Option<String>,
    run_id: String,
    every: Option<Duration>,
    stall: Option<Duration>,
    last_beat: std::time::Instant,
    last_change: std::time::Instant,
    last_seen: (usize, usize),
    stalled: bool,
}

impl Pulse {
    fn new(cx: &StepContext) -> Result<Self, StepError> {
        let url = cx.resource::<Notifier>().ok().and_then(|n| n.0.clone());
        let secs = |k: &str| -> Result<Option<Duration>, StepError> {
            Ok(cx
                .param::<u64>(k)?
                .filter(|s| *s > 0)
                .map(Duration::from_secs))
        };
        Ok(Pulse {
            url,
            run_id: cx.run_id().as_str().to_string(),
            every: secs("notify_every_s")?,
            stall: secs("stall_timeout_s")?,
            last_beat: std::time::Instant::now(),
            last_change: std::time::Instant::now(),
            last_seen: (0, 0),
            stalled: false,
        })
    }

    async fn beat(&mut self, record: &RunRecord, w: &Watch) {
        let Some(url) = self.url.clone() else {
            return;
        };
        let now = (w.running.len(), record.finished.len());
        if now != self.last_seen {
            self.last_seen = now;
            self.last_change = std::time::Instant::now();
            self.stalled = false;
        }
        if let Some(stall) = self.stall {
            if !self.stalled && self.last_change.elapsed() >= stall {
                let counts = record.notify_counts(w.running.len());
                self.stalled = true;
                let ev = crate::notify::Event::new(
                    crate::notify::EventKind::Stalled,
                    &self.run_id,
                    "stalled",
                    counts,
                    format!("no Job started or finished for {} s", stall.as_secs()),
                );
                tokio::spawn(async move { crate::notify::send(&url, &ev).await });
                return;
            }
        }
        if let Some(every) = self.every {
            if self.last_beat.elapsed() >= every {
                self.last_beat = std::time::Instant::now();
                let counts = record.notify_counts(w.running.len());
                let ev = crate::notify::Event::new(
                    crate::notify::EventKind::Heartbeat,
                    &self.run_id,
                    "running",
                    counts,
                    format!(
                        "{} of {} runs have a verdict",
                        counts.succeeded + counts.failed + counts.lost,
                        counts.total
                    ),
                );
                tokio::spawn(async move { crate::notify::send(&url, &ev).await });
            }
        }
    }
}

/// The campaign's webhook (never persisted: read from `--notify` or `VAST_NOTIFY_URL` when
/// the run starts or resumes).
#[derive(Debug, Clone, Default)]
pub struct Notifier(pub Option<String>);

#[cfg(test)]
mod tests {
    use super::total_duration;

    #[test]
    fn total_duration_counts_from_the_runs_first_start() {
        let now: jiff::Timestamp = "2026-12-01T10:05:00Z".parse().unwrap();
        // Created 5 minutes ago by the first process; a resume 10 s ago does not reset it.
        assert_eq!(
            total_duration(Some("2026-12-01T10:00:00Z"), now),
            Some(300.0)
        );
        assert_eq!(total_duration(None, now), None);
        assert_eq!(total_duration(Some("garbage"), now), None);
        assert_eq!(total_duration(Some("2026-12-01T11:00:00Z"), now), None);
    }
}
