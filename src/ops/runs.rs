//! Removing scenario runs from a cluster (shared by `run-cleanup`, `cleanup` and
//! `run --cleanup`), and the run's own record of what its Jobs did ([`RunRecord`]), which
//! outlives the Jobs that `ttlSecondsAfterFinished` deletes.
//!
//! Removal never touches the shared ClusterQueue: the selected Workloads are deactivated
//! (`spec.active: false`, so Kueue admits none of them while the Jobs go), the Jobs are deleted
//! in one delete-collection call (their pods and Workloads follow by garbage collection), then
//! leftover Workloads and pods are deleted and their finalizers stripped. Other runs' Workloads
//! are never evicted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::error::is_not_found;
use crate::cluster::kueue::workloads;
use crate::manifests::job::{label_safe, JOBGROUP};

/// Label selector of the scenario Jobs and pods of one run (or of all runs).
pub fn selector(run: Option<&str>) -> String {
    match run {
        Some(r) => format!("jobgroup={JOBGROUP},run-id={}", label_safe(r)),
        None => format!("jobgroup={JOBGROUP}"),
    }
}

/// The `run-id` labels of the scenario Jobs in `namespace`.
pub async fn run_ids(client: &Client, namespace: &str) -> Result<BTreeSet<String>, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let list = jobs
        .list(&ListParams::default().labels(&selector(None)))
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|j| j.metadata.labels.as_ref()?.get("run-id").cloned())
        .collect())
}

/// Names of the Workloads owned by the selected Jobs (by owner UID, not by a label).
pub async fn workloads_of(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<String>, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let uids: BTreeSet<String> = jobs
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter_map(|j| j.metadata.uid)
        .collect();
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let wls = match workloads(client, Some(namespace))
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        // No Kueue: no Workloads.
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(wls
        .into_iter()
        .filter(|w| {
            w.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| uids.contains(&o.uid))
        })
        .filter_map(|w| w.metadata.name)
        .collect())
}

/// `spec.active: false` on each Workload (missing ones are fine).
pub async fn deactivate(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<(), kube::Error> {
    let api = workloads(client, Some(namespace));
    let patch = json!({"spec": {"active": false}});
    for n in names {
        match api
            .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn now_delete() -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    }
}

/// Deletes the selected Jobs in one call, then strips the finalizers of any still terminating.
/// Returns how many Jobs were there.
pub async fn delete_jobs(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<usize, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(selector);
    let n = jobs.list(&lp).await?.items.len();
    if n > 0 {
        jobs.delete_collection(&now_delete(), &lp).await?;
    }
    let strip = json!({"metadata": {"finalizers": null}});
    for j in jobs.list(&lp).await?.items {
        if let Some(name) = j.metadata.name {
            match jobs
                .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

/// Deletes the named Workloads and strips their finalizers (missing ones are fine).
pub async fn delete_workloads(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<(), kube::Error> {
    let api = workloads(client, Some(namespace));
    let strip = json!({"metadata": {"finalizers": null}});
    for n in names {
        match api.delete(n, &now_delete()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        }
        match api
            .patch(n, &PatchParams::default(), &Patch::Merge(&strip))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the selected pods and strips the finalizers of any still there.
pub async fn delete_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(selector);
    if !pods.list(&lp).await?.items.is_empty() {
        pods.delete_collection(&now_delete(), &lp).await?;
    }
    let strip = json!({"metadata": {"finalizers": null}});
    for p in pods.list(&lp).await?.items {
        if let Some(name) = p.metadata.name {
            match pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// How a Job ended, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    Succeeded,
    Failed,
}

/// One finished Job as observed (times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub outcome: JobOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
}

/// What vast knows of a run's Jobs, kept in `<state dir>/work/<run-id>/record.json` (replaced
/// atomically; written by `run` and updated by `run --follow` and `monitor`). Finished Jobs
/// stay counted after the cluster deleted them; Jobs that vanished unobserved are *unknown*,
/// never guessed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    #[serde(default)]
    pub context: Option<String>,
    pub namespace: String,
    /// Every Job name of the run.
    pub jobs: Vec<String>,
    /// Set once every Job exists in the cluster.
    #[serde(default)]
    pub submitted: bool,
    /// Final outcomes observed, by Job name.
    #[serde(default)]
    pub finished: BTreeMap<String, JobRecord>,
}

/// The work directory of run `id` under the state directory.
pub fn work_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("work").join(id)
}

fn record_path(state_dir: &Path, id: &str) -> PathBuf {
    work_dir(state_dir, id).join("record.json")
}

impl RunRecord {
    /// The record of run `id`, if any. A damaged file is an error naming it.
    pub fn load(state_dir: &Path, id: &str) -> Result<Option<RunRecord>, String> {
        let path = record_path(state_dir, id);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Every record under the state directory, by run id.
    pub fn load_all(state_dir: &Path) -> Vec<RunRecord> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(state_dir.join("work")) else {
            return out;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            match RunRecord::load(state_dir, &id) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!("ignoring run record: {e}"),
            }
        }
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        out
    }

    /// Merges `self` into the record on disk (finished Jobs are only ever added) and writes it
    /// through a temporary file renamed into place.
    pub fn save(&self, state_dir: &Path) -> Result<(), String> {
        let mut merged = self.clone();
        if let Ok(Some(old)) = RunRecord::load(state_dir, &self.run_id) {
            for (k, v) in old.finished {
                merged.finished.entry(k).or_insert(v);
            }
            merged.submitted |= old.submitted;
            if merged.jobs.is_empty() {
                merged.jobs = old.jobs;
            }
        }
        let dir = work_dir(state_dir, &self.run_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = record_path(state_dir, &self.run_id);
        let tmp = dir.join(format!(".record.json.{}", std::process::id()));
        let text = serde_json::to_vec(&merged).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// How a listed Job stands (upstream's monitor classification, plus the outcome when final).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Succeeded,
    Failed,
    Running,
    Pending,
}

/// Classifies a Job: finished when it has a `Complete` or `Failed` condition (or
/// succeeded ≥ 1); running when a pod is active; else pending (also suspended by Kueue).
pub fn job_state(j: &Job) -> JobState {
    let Some(s) = &j.status else {
        return JobState::Pending;
    };
    let cond = |t: &str| {
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if s.succeeded.unwrap_or(0) >= 1 || cond("Complete") {
        JobState::Succeeded
    } else if cond("Failed") {
        JobState::Failed
    } else if s.active.unwrap_or(0) >= 1 {
        JobState::Running
    } else if s.failed.unwrap_or(0) >= 1 && j.spec.as_ref().and_then(|s| s.backoff_limit) == Some(0)
    {
        JobState::Failed
    } else {
        JobState::Pending
    }
}

/// The final record of a finished Job (None while it runs).
pub fn job_record(j: &Job) -> Option<JobRecord> {
    let outcome = match job_state(j) {
        JobState::Succeeded => JobOutcome::Succeeded,
        JobState::Failed => JobOutcome::Failed,
        _ => return None,
    };
    let s = j.status.as_ref()?;
    let secs = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| t.0.as_second())
    };
    let end = secs(&s.completion_time).or_else(|| {
        s.conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Failed" || c.type_ == "Complete") && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0.as_second()))
    });
    Some(JobRecord {
        outcome,
        start: secs(&s.start_time),
        end,
    })
}
