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
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::error::is_not_found;
use crate::cluster::kueue::workloads;
use crate::cluster::objects::{delete_named, delete_now, strip_finalizers_named};
use crate::manifests::job::{label_safe, JOBGROUP};
use crate::results::io::PathError;

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

/// Deletes the objects `lp` selects in one delete-collection call, then strips the finalizers
/// of any still there (terminating). Returns how many were selected.
async fn delete_selected<K>(api: &Api<K>, lp: &ListParams) -> Result<usize, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    let n = api.list(lp).await?.items.len();
    if n > 0 {
        api.delete_collection(&delete_now(), lp).await?;
    }
    for o in api.list(lp).await?.items {
        if let Some(name) = o.meta().name.as_deref() {
            strip_finalizers_named(api, name).await?;
        }
    }
    Ok(n)
}

/// Deletes the selected Jobs in one call, then strips the finalizers of any still terminating.
/// Returns how many Jobs were there.
pub async fn delete_jobs(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<usize, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    delete_selected(&jobs, &ListParams::default().labels(selector)).await
}

/// Deletes the named Workloads and strips their finalizers (missing ones are fine).
pub async fn delete_workloads(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<(), kube::Error> {
    let api = workloads(client, Some(namespace));
    for n in names {
        if delete_named(&api, n).await? {
            strip_finalizers_named(&api, n).await?;
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
    delete_selected(&pods, &ListParams::default().labels(selector)).await?;
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
    /// Records the outcome of `j` if it finished and none was recorded yet; returns whether
    /// the record changed (outcomes, once seen, never change).
    pub fn observe(&mut self, j: &Job) -> bool {
        let Some(name) = j.metadata.name.as_ref() else {
            return false;
        };
        if self.finished.contains_key(name) {
            return false;
        }
        match job_record(j) {
            Some(r) => {
                self.finished.insert(name.clone(), r);
                true
            }
            None => false,
        }
    }

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

    /// Every record under the state directory, sorted by run id, with the time each was last
    /// written.
    pub fn load_all(state_dir: &Path) -> Vec<(RunRecord, std::time::SystemTime)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(state_dir.join("work")) else {
            return out;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            let modified = std::fs::metadata(record_path(state_dir, &id))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            match RunRecord::load(state_dir, &id) {
                Ok(Some(r)) => out.push((r, modified)),
                Ok(None) => {}
                Err(e) => tracing::warn!("ignoring run record: {e}"),
            }
        }
        out.sort_by(|a, b| a.0.run_id.cmp(&b.0.run_id));
        out
    }

    /// Merges `self` into the record on disk (finished Jobs are only ever added) and writes it
    /// through a temporary file renamed into place.
    pub fn save(&self, state_dir: &Path) -> Result<(), PathError> {
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
        std::fs::create_dir_all(&dir).map_err(|e| PathError::new("create", &dir, e))?;
        let path = record_path(state_dir, &self.run_id);
        let tmp = dir.join(format!(".record.json.{}", std::process::id()));
        let text = serde_json::to_vec(&merged)
            .map_err(|e| PathError::new("serialize", &path, std::io::Error::other(e)))?;
        std::fs::write(&tmp, text).map_err(|e| PathError::new("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| PathError::new("write", &path, e))
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
