//! Run accounting, the one home of what a scenario run's Jobs did: the run's record
//! ([`RunRecord`]: its Job names and every outcome observed, which outlives the Jobs that
//! `ttlSecondsAfterFinished` deletes), a Job's state, the counts of a run as `monitor` shows
//! them ([`count_run`]), what `--follow` knows while watching ([`Watch`]) and the statistics
//! block ([`RunStats`]). Used by `run --follow`, `monitor` and `download`'s readiness check.
//! The run's objects on the cluster (selector, removal) are [`crate::cluster::runs`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::batch::v1::Job;
use serde::{Deserialize, Serialize};

use crate::results::io::PathError;

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

/// Statistics of a followed run (also the step's output).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunStats {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Jobs deleted before their outcome was observed.
    pub unknown: usize,
    pub duration_s: f64,
    pub durations: Vec<(String, i64)>,
    pub failed_jobs: Vec<String>,
}

pub fn stats_of(record: &RunRecord, unknown: usize, elapsed: f64) -> RunStats {
    let mut durations: Vec<(String, i64)> = record
        .finished
        .iter()
        .filter_map(|(n, r)| Some((n.clone(), r.end? - r.start?)))
        .collect();
    durations.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let failed_jobs: Vec<String> = record
        .finished
        .iter()
        .filter(|(_, r)| r.outcome == JobOutcome::Failed)
        .map(|(n, _)| n.clone())
        .collect();
    RunStats {
        total: record.jobs.len(),
        succeeded: record
            .finished
            .values()
            .filter(|r| r.outcome == JobOutcome::Succeeded)
            .count(),
        failed: failed_jobs.len(),
        unknown,
        duration_s: elapsed,
        durations,
        failed_jobs,
    }
}

/// The statistics block printed after `--follow`.
pub fn render_stats(s: &RunStats) -> String {
    let line = "=".repeat(60);
    let mut out = format!(
        "{line}\nRUN STATISTICS\n{line}\nTotal duration: {:.1} s\nJobs: {} total, {} succeeded, {} failed",
        s.duration_s, s.total, s.succeeded, s.failed
    );
    if s.unknown > 0 {
        out.push_str(&format!(
            ", {} unknown (deleted before their outcome was seen)",
            s.unknown
        ));
    }
    out.push('\n');
    if !s.durations.is_empty() {
        let d: Vec<i64> = s.durations.iter().map(|x| x.1).collect();
        let avg = d.iter().sum::<i64>() as f64 / d.len() as f64;
        let median = if d.len() % 2 == 1 {
            d[d.len() / 2] as f64
        } else {
            (d[d.len() / 2 - 1] + d[d.len() / 2]) as f64 / 2.0
        };
        out.push_str(&format!(
            "Job duration: average {avg:.1} s, median {median:.1} s, min {} s, max {} s\n",
            d[0],
            d[d.len() - 1]
        ));
        let (fast, slow) = (&s.durations[0], &s.durations[s.durations.len() - 1]);
        out.push_str(&format!("Fastest job: {} ({} s)\n", fast.0, fast.1));
        out.push_str(&format!("Slowest job: {} ({} s)\n", slow.0, slow.1));
    }
    if !s.failed_jobs.is_empty() {
        out.push_str("Failed jobs:\n");
        for n in s.failed_jobs.iter().take(10) {
            out.push_str(&format!("  - {n}\n"));
        }
        if s.failed_jobs.len() > 10 {
            out.push_str(&format!("  ... and {} more\n", s.failed_jobs.len() - 10));
        }
    }
    out.push_str(&line);
    out
}

/// What `--follow` knows of the run's Jobs while watching.
#[derive(Default)]
pub struct Watch {
    /// Jobs currently in the cluster and not finished.
    pub open: std::collections::BTreeSet<String>,
    /// Jobs in the cluster (any state), as of the last complete list and the events since.
    pub present: std::collections::BTreeSet<String>,
    /// The first complete list arrived.
    pub listed: bool,
    /// Names gathered during a re-list.
    pub relist: Option<std::collections::BTreeSet<String>>,
}

impl Watch {
    /// Applies one Job as seen; returns whether the record gained an outcome.
    pub fn seen(&mut self, record: &mut RunRecord, j: &Job) -> bool {
        let Some(name) = j.metadata.name.clone() else {
            return false;
        };
        if let Some(r) = &mut self.relist {
            r.insert(name.clone());
        }
        self.present.insert(name.clone());
        match job_state(j) {
            JobState::Succeeded | JobState::Failed => {
                self.open.remove(&name);
                record.observe(j)
            }
            _ => {
                self.open.insert(name);
                false
            }
        }
    }

    /// What is known, as counts (listed, unfinished, present, outcomes): a change is progress.
    pub fn known(&self, record: &RunRecord) -> (bool, usize, usize, usize) {
        (
            self.listed,
            self.open.len(),
            self.present.len(),
            record.finished.len(),
        )
    }

    pub fn deleted(&mut self, name: &str) {
        self.open.remove(name);
        self.present.remove(name);
    }

    /// (unfinished Jobs, Jobs gone without an observed outcome), once the first list arrived.
    pub fn counts(&self, record: &RunRecord) -> Option<(usize, usize)> {
        if !self.listed {
            return None;
        }
        let vanished = record
            .jobs
            .iter()
            .filter(|n| !self.present.contains(*n) && !record.finished.contains_key(*n))
            .count();
        Some((self.open.len(), vanished))
    }
}

/// A pending Job and what Kueue says about it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PendingJob {
    pub job: String,
    /// The Workload's `QuotaReserved`/`Admitted` condition message (or `Suspended`).
    pub reason: Option<String>,
    /// 1-based position among the ClusterQueue's pending Workloads (creation order).
    pub position: Option<usize>,
}

/// One run as shown.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunLine {
    pub run_id: String,
    pub total: u64,
    pub finished: u64,
    pub ok: u64,
    pub fail: u64,
    /// Finished but never observed (deleted before anyone saw the outcome).
    pub unknown: u64,
    pub running: u64,
    pub pending: u64,
    pub rate_per_min: Option<f64>,
    pub eta: Option<String>,
    pub pending_jobs: Vec<PendingJob>,
}

/// Counts one run's line from the Jobs listed now and its record. Updates the record with
/// newly seen outcomes; returns whether it changed.
pub fn count_run(
    run_id: &str,
    listed: &[&Job],
    record: &mut Option<RunRecord>,
    seen_max: &mut (u64, u64),
) -> (RunLine, bool) {
    let mut running = 0;
    let mut pending = 0;
    let mut ok_now = 0;
    let mut fail_now = 0;
    let mut changed = false;
    let mut total_ann: Option<u64> = None;
    for j in listed {
        if total_ann.is_none() {
            total_ann = j
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("total-job-num"))
                .and_then(|v| v.parse().ok());
        }
        let state = job_state(j);
        match state {
            JobState::Running => running += 1,
            JobState::Pending => pending += 1,
            JobState::Succeeded => ok_now += 1,
            JobState::Failed => fail_now += 1,
        }
        if let Some(rec) = record.as_mut() {
            changed |= rec.observe(j);
        }
    }
    // Jobs of the plan not created yet (the run is still submitting) are pending.
    if let Some(rec) = record.as_ref().filter(|r| !r.submitted) {
        let listed_names: BTreeSet<&str> = listed
            .iter()
            .filter_map(|j| j.metadata.name.as_deref())
            .collect();
        pending += rec
            .jobs
            .iter()
            .filter(|n| !listed_names.contains(n.as_str()) && !rec.finished.contains_key(*n))
            .count() as u64;
    }
    let (ok, fail, total) = match record {
        Some(rec) => {
            let ok = rec
                .finished
                .values()
                .filter(|r| r.outcome == JobOutcome::Succeeded)
                .count() as u64;
            let fail = rec.finished.len() as u64 - ok;
            let total = if rec.jobs.is_empty() {
                total_ann.unwrap_or(listed.len() as u64)
            } else {
                rec.jobs.len() as u64
            };
            (ok, fail, total)
        }
        None => {
            seen_max.0 = seen_max.0.max(ok_now);
            seen_max.1 = seen_max.1.max(fail_now);
            (
                seen_max.0,
                seen_max.1,
                total_ann.unwrap_or(listed.len() as u64),
            )
        }
    };
    let total = total.max(running + pending + ok + fail);
    let finished = total - (running + pending);
    let unknown = finished.saturating_sub(ok + fail);
    (
        RunLine {
            run_id: run_id.to_string(),
            total,
            finished,
            ok,
            fail,
            unknown,
            running,
            pending,
            rate_per_min: None,
            eta: None,
            pending_jobs: Vec::new(),
        },
        changed,
    )
}
