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

/// How a Job ended, as observed: the run's verdict (`succeeded`, `failed`: the scenario
/// itself failed) or no verdict at all (`lost`: the infrastructure lost it: preempted,
/// evicted, OOMKilled, deadline exceeded, never started, vanished unobserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    Succeeded,
    Failed,
    Lost,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Lost => "lost",
        }
    }
}

/// One finished Job as observed (times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub outcome: JobOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    /// Why it failed or was lost (`exit code 3`, `OOMKilled`, `preempted`, `deadline
    /// exceeded`, `vanished before its outcome was observed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The scenario container's exit code, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Where the failure evidence (reason, exit code, log tails) was stored: a key of the
    /// run's bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

impl JobRecord {
    pub fn new(outcome: JobOutcome) -> Self {
        JobRecord {
            outcome,
            start: None,
            end: None,
            reason: None,
            exit_code: None,
            evidence: None,
        }
    }
}

/// The name of attempt `attempt` (1-based) of the run whose first Job is `base`.
pub use crate::manifests::job::attempt_job_name as attempt_name;

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
    /// The first Job name of every scenario run (configuration × run number).
    pub jobs: Vec<String>,
    /// Set once every Job exists in the cluster.
    #[serde(default)]
    pub submitted: bool,
    /// Final outcomes observed, by Job name (every attempt's).
    #[serde(default)]
    pub finished: BTreeMap<String, JobRecord>,
    /// Runs re-submitted: first Job name → the latest attempt number (≥ 2). The Job of
    /// attempt k is [`attempt_name`]`(first, k)`; every attempt's outcome stays in `finished`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attempts: BTreeMap<String, u32>,
}

/// Per-class counts of a run's verdicts (the latest attempt of each scenario run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    pub succeeded: usize,
    pub failed: usize,
    pub lost: usize,
    /// No outcome observed yet (running, pending, or vanished unobserved).
    pub open: usize,
    /// Attempts re-submitted (all runs).
    pub resubmitted: usize,
}

impl Verdicts {
    /// Runs with a verdict (succeeded, failed or lost).
    pub fn decided(&self) -> usize {
        self.succeeded + self.failed + self.lost
    }

    /// `(s ok, f fail, l lost)`: the counts beside a progress bar.
    pub fn summary(&self) -> String {
        format!(
            "({} ok, {} fail, {} lost)",
            self.succeeded, self.failed, self.lost
        )
    }
}

/// The work directory of run `id` under the state directory.
pub fn work_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("work").join(id)
}

fn record_path(state_dir: &Path, id: &str) -> PathBuf {
    work_dir(state_dir, id).join("record.json")
}

impl RunRecord {
    /// The latest attempt number of the run whose first Job is `base`.
    pub fn attempt_of(&self, base: &str) -> u32 {
        self.attempts.get(base).copied().unwrap_or(1)
    }

    /// The Job of the latest attempt of the run whose first Job is `base`.
    pub fn latest(&self, base: &str) -> String {
        attempt_name(base, self.attempt_of(base))
    }

    /// Every run's latest Job name with its outcome, if one was observed.
    pub fn latest_outcomes(&self) -> impl Iterator<Item = (&str, String, Option<&JobRecord>)> {
        self.jobs.iter().map(move |b| {
            let latest = self.latest(b);
            let rec = self.finished.get(&latest);
            (b.as_str(), latest, rec)
        })
    }

    /// Counts of the runs' verdicts.
    pub fn verdicts(&self) -> Verdicts {
        let mut v = Verdicts {
            resubmitted: self
                .attempts
                .values()
                .map(|k| (*k as usize).saturating_sub(1))
                .sum(),
            ..Default::default()
        };
        for (_, _, r) in self.latest_outcomes() {
            match r.map(|r| r.outcome) {
                Some(JobOutcome::Succeeded) => v.succeeded += 1,
                Some(JobOutcome::Failed) => v.failed += 1,
                Some(JobOutcome::Lost) => v.lost += 1,
                None => v.open += 1,
            }
        }
        v
    }

    /// Records the outcome `r` of Job `name` unless one was recorded; returns whether the
    /// record changed.
    pub fn record(&mut self, name: &str, r: JobRecord) -> bool {
        if self.finished.contains_key(name) {
            return false;
        }
        self.finished.insert(name.to_string(), r);
        true
    }

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

    /// Adds what `other` knows (another process's view of the same run): outcomes are only
    /// added, attempt numbers only grow, `submitted` only becomes true, the Job list is kept.
    pub fn merge(&mut self, other: RunRecord) {
        for (k, v) in other.finished {
            self.finished.entry(k).or_insert(v);
        }
        self.submitted |= other.submitted;
        if self.jobs.is_empty() {
            self.jobs = other.jobs;
        }
        for (k, v) in other.attempts {
            let e = self.attempts.entry(k).or_insert(v);
            *e = (*e).max(v);
        }
    }

    /// The verdict counts as a notification carries them (`running`: Jobs running now).
    pub fn notify_counts(&self, running: usize) -> crate::notify::Counts {
        let v = self.verdicts();
        crate::notify::Counts {
            total: self.jobs.len(),
            succeeded: v.succeeded,
            failed: v.failed,
            lost: v.lost,
            running,
        }
    }

    /// Merges `self` into the record on disk (finished Jobs are only ever added) and writes it
    /// through a temporary file renamed into place.
    pub fn save(&self, state_dir: &Path) -> Result<(), PathError> {
        let mut merged = self.clone();
        if let Ok(Some(old)) = RunRecord::load(state_dir, &self.run_id) {
            merged.merge(old);
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
/// `Failed` is any end without success: [`job_record`] tells a scenario failure from a loss.
pub fn job_state(j: &Job) -> JobState {
    let Some(s) = &j.status else {
        return JobState::Pending;
    };
    if s.succeeded.unwrap_or(0) >= 1 || condition(j, "Complete").is_some() {
        JobState::Succeeded
    } else if condition(j, "Failed").is_some() {
        JobState::Failed
    } else if s.active.unwrap_or(0) >= 1 {
        JobState::Running
    } else if s.failed.unwrap_or(0) >= 1 && legacy(j) {
        JobState::Failed
    } else {
        JobState::Pending
    }
}

/// The Job's condition `t` when it is True.
fn condition<'a>(j: &'a Job, t: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    j.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t && c.status == "True")
}

/// A Job of before the pod failure policy (`backoffLimit: 0`, none): any failed pod is the
/// scenario's failure, as upstream counts it.
fn legacy(j: &Job) -> bool {
    j.spec
        .as_ref()
        .map(|s| s.backoff_limit == Some(0) && s.pod_failure_policy.is_none())
        .unwrap_or(false)
}

/// The exit code in a `PodFailurePolicy` condition message ("... failed with exit code 3
/// matching FailJob rule at index 1").
fn exit_code_in(message: &str) -> Option<i32> {
    let rest = &message[message.find("exit code ")? + "exit code ".len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

/// The final record of a finished Job (None while it runs), classified from the Job alone:
/// `Complete` is `succeeded`; `Failed` by the pod failure policy (a scenario exit code) is
/// `failed`; `DeadlineExceeded`, `BackoffLimitExceeded` (infrastructure failures the policy
/// counts: OOMKilled, SIGTERM, init trouble) and anything else are `lost`. Legacy Jobs
/// (`backoffLimit: 0`, no policy) count every failure as `failed`. [`refine`] adds what
/// the pods tell.
pub fn job_record(j: &Job) -> Option<JobRecord> {
    let (outcome, reason, exit_code) = match job_state(j) {
        JobState::Succeeded => (JobOutcome::Succeeded, None, None),
        JobState::Failed => {
            let c = condition(j, "Failed");
            let why = c.and_then(|c| c.reason.clone()).unwrap_or_default();
            let msg = c.and_then(|c| c.message.clone()).unwrap_or_default();
            match why.as_str() {
                "PodFailurePolicy" => {
                    let code = exit_code_in(&msg);
                    let reason = match code {
                        Some(n) => format!("exit code {n}"),
                        None => msg.clone(),
                    };
                    (JobOutcome::Failed, Some(reason), code)
                }
                _ if legacy(j) => (
                    JobOutcome::Failed,
                    Some(if why.is_empty() { "failed".into() } else { why }),
                    None,
                ),
                "DeadlineExceeded" => (
                    JobOutcome::Lost,
                    Some("deadline exceeded".to_string()),
                    None,
                ),
                "BackoffLimitExceeded" => (
                    JobOutcome::Lost,
                    Some("infrastructure failures exceeded the backoff limit".to_string()),
                    None,
                ),
                "" => (
                    JobOutcome::Lost,
                    Some("failed without a reason".to_string()),
                    None,
                ),
                other => (JobOutcome::Lost, Some(other.to_string()), None),
            }
        }
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
        reason,
        exit_code,
        evidence: None,
    })
}

/// What a failed pod says about why it ended: (reason, exit code of the scenario
/// container, the pod was disrupted).
pub fn pod_failure(pod: &k8s_openapi::api::core::v1::Pod) -> (Option<String>, Option<i32>, bool) {
    let Some(st) = &pod.status else {
        return (None, None, false);
    };
    let disrupted = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True");
    if let Some(c) = disrupted {
        let why = match c.reason.as_deref() {
            Some("PreemptionByScheduler") | Some("PreemptionByKubeScheduler") => "preempted",
            Some("TerminationByKubelet") => "preempted (node shutdown)",
            Some("EvictionByEvictionAPI") => "evicted",
            Some("DeletionByTaintManager") => "evicted (node taint)",
            Some("DeletionByPodGC") => "node lost",
            _ => "disrupted",
        };
        return (Some(why.to_string()), None, true);
    }
    if st.reason.as_deref() == Some("Evicted") {
        return (Some("evicted".to_string()), None, true);
    }
    let terminated = |cs: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
        cs.iter()
            .flatten()
            .filter_map(|c| {
                let t = c.state.as_ref()?.terminated.as_ref()?;
                (t.exit_code != 0).then(|| (c.name.clone(), t.exit_code, t.reason.clone()))
            })
            .collect::<Vec<_>>()
    };
    let main = terminated(&st.container_statuses);
    let init = terminated(&st.init_container_statuses);
    if let Some((_, code, reason)) = main.first() {
        let r = match reason.as_deref() {
            Some("OOMKilled") => "OOMKilled".to_string(),
            _ if *code == crate::manifests::job::EXIT_UPLOAD_FAILED => {
                format!("results upload failed (exit code {code})")
            }
            _ => format!("exit code {code}"),
        };
        return (Some(r), Some(*code), false);
    }
    if let Some((name, code, _)) = init.first() {
        return (
            Some(format!(
                "init container {name} failed with exit code {code}"
            )),
            None,
            false,
        );
    }
    (st.reason.clone(), None, false)
}

/// Refines a `lost` record with what the Job's last failed pod says (OOMKilled, preempted,
/// an init container that failed).
pub fn refine(r: &mut JobRecord, pods: &[k8s_openapi::api::core::v1::Pod]) {
    let last = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .max_by_key(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        });
    let Some(pod) = last else {
        if r.outcome == JobOutcome::Lost && r.reason.as_deref() == Some("deadline exceeded") {
            r.reason = Some("deadline exceeded (never started)".into());
        }
        return;
    };
    let (reason, code, _) = pod_failure(pod);
    if r.exit_code.is_none() {
        r.exit_code = code;
    }
    if r.outcome == JobOutcome::Lost {
        if let Some(why) = reason {
            r.reason = Some(match r.reason.as_deref() {
                Some("deadline exceeded") => format!("deadline exceeded ({why})"),
                _ => why,
            });
        }
    }
}

/// Statistics of a followed run (also the step's output).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunStats {
    /// Scenario runs (configurations × runs).
    pub total: usize,
    pub succeeded: usize,
    /// The scenario failed (its own exit code).
    pub failed: usize,
    /// No verdict: lost by the infrastructure, after every re-submission.
    #[serde(default)]
    pub lost: usize,
    /// Jobs deleted before their outcome was observed (counted in `lost` too).
    pub unknown: usize,
    /// Attempts re-submitted because the previous one was lost.
    #[serde(default)]
    pub resubmitted: usize,
    pub duration_s: f64,
    pub durations: Vec<(String, i64)>,
    pub failed_jobs: Vec<String>,
    /// Lost runs' latest Jobs with their reasons.
    #[serde(default)]
    pub lost_jobs: Vec<(String, String)>,
}

pub fn stats_of(record: &RunRecord, unknown: usize, elapsed: f64) -> RunStats {
    let mut durations: Vec<(String, i64)> = record
        .latest_outcomes()
        .filter_map(|(_, n, r)| {
            let r = r?;
            Some((n, r.end? - r.start?))
        })
        .collect();
    durations.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut failed_jobs = Vec::new();
    let mut lost_jobs = Vec::new();
    for (_, n, r) in record.latest_outcomes() {
        match r {
            Some(r) if r.outcome == JobOutcome::Failed => failed_jobs.push(n),
            Some(r) if r.outcome == JobOutcome::Lost => {
                lost_jobs.push((n, r.reason.clone().unwrap_or_else(|| "unknown".into())))
            }
            _ => {}
        }
    }
    let v = record.verdicts();
    RunStats {
        total: record.jobs.len(),
        succeeded: v.succeeded,
        failed: v.failed,
        lost: v.lost,
        unknown,
        resubmitted: v.resubmitted,
        duration_s: elapsed,
        durations,
        failed_jobs,
        lost_jobs,
    }
}

/// The statistics block printed after `--follow`.
pub fn render_stats(s: &RunStats) -> String {
    let line = "=".repeat(60);
    let mut out = format!(
        "{line}\nRUN STATISTICS\n{line}\nTotal duration: {:.1} s\nJobs: {} total, {} succeeded, {} failed",
        s.duration_s, s.total, s.succeeded, s.failed
    );
    if s.lost > 0 {
        out.push_str(&format!(", {} lost", s.lost));
    }
    if s.unknown > 0 {
        out.push_str(&format!(
            ", {} unknown (deleted before their outcome was seen)",
            s.unknown
        ));
    }
    out.push('\n');
    if s.resubmitted > 0 {
        out.push_str(&format!(
            "Re-submitted: {} of runs lost by the infrastructure\n",
            crate::console::plural(s.resubmitted as u64, "attempt")
        ));
    }
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
    if !s.lost_jobs.is_empty() {
        out.push_str("Lost jobs (no verdict; `vast execution cluster rerun` re-submits them):\n");
        for (n, why) in s.lost_jobs.iter().take(10) {
            out.push_str(&format!("  - {n}: {why}\n"));
        }
        if s.lost_jobs.len() > 10 {
            out.push_str(&format!("  ... and {} more\n", s.lost_jobs.len() - 10));
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
    /// Jobs with an active pod.
    pub running: std::collections::BTreeSet<String>,
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
        let state = job_state(j);
        if state == JobState::Running {
            self.running.insert(name.clone());
        } else {
            self.running.remove(&name);
        }
        match state {
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
        self.running.remove(name);
        self.open.remove(name);
        self.present.remove(name);
    }

    /// The runs whose latest Job is gone from the cluster without an observed outcome:
    /// (first Job, latest Job).
    pub fn vanished(&self, record: &RunRecord) -> Vec<(String, String)> {
        record
            .latest_outcomes()
            .filter(|(_, n, r)| r.is_none() && !self.present.contains(n))
            .map(|(b, n, _)| (b.to_string(), n))
            .collect()
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
    /// Lost by the infrastructure (no verdict).
    #[serde(default)]
    pub lost: u64,
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
            .latest_outcomes()
            .filter(|(_, n, r)| !listed_names.contains(n.as_str()) && r.is_none())
            .count() as u64;
    }
    let (ok, fail, lost, total) = match record {
        Some(rec) if !rec.jobs.is_empty() => {
            let v = rec.verdicts();
            (
                v.succeeded as u64,
                v.failed as u64,
                v.lost as u64,
                rec.jobs.len() as u64,
            )
        }
        Some(rec) => {
            let ok = rec
                .finished
                .values()
                .filter(|r| r.outcome == JobOutcome::Succeeded)
                .count() as u64;
            let lost = rec
                .finished
                .values()
                .filter(|r| r.outcome == JobOutcome::Lost)
                .count() as u64;
            let fail = rec.finished.len() as u64 - ok - lost;
            (ok, fail, lost, total_ann.unwrap_or(listed.len() as u64))
        }
        None => {
            seen_max.0 = seen_max.0.max(ok_now);
            seen_max.1 = seen_max.1.max(fail_now);
            (
                seen_max.0,
                seen_max.1,
                0,
                total_ann.unwrap_or(listed.len() as u64),
            )
        }
    };
    let total = total.max(running + pending + ok + fail + lost);
    let finished = total.saturating_sub(running + pending);
    let unknown = finished.saturating_sub(ok + fail + lost);
    (
        RunLine {
            run_id: run_id.to_string(),
            total,
            finished,
            ok,
            fail,
            lost,
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn job(spec: serde_json::Value, status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    fn failed(reason: &str, message: &str) -> serde_json::Value {
        json!({"failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": reason, "message": message},
            {"type": "Failed", "status": "True", "reason": reason, "message": message}
        ]})
    }

    const POLICY: &str =
        r#"{"backoffLimit": 2, "podFailurePolicy": {"rules": []}, "template": {}}"#;

    #[test]
    fn jobs_are_classified_succeeded_failed_or_lost() {
        let spec: serde_json::Value = serde_json::from_str(POLICY).unwrap();
        let ok = job(
            spec.clone(),
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(job_record(&ok).unwrap().outcome, JobOutcome::Succeeded);
        let f = job(
            spec.clone(),
            failed("PodFailurePolicy", "Container robovast for pod default/j-x failed with exit code 3 matching FailJob rule at index 1"),
        );
        let r = job_record(&f).unwrap();
        assert_eq!(
            (r.outcome, r.exit_code, r.reason.as_deref()),
            (JobOutcome::Failed, Some(3), Some("exit code 3"))
        );
        let d = job(
            spec.clone(),
            failed(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
        );
        assert_eq!(job_record(&d).unwrap().outcome, JobOutcome::Lost);
        let b = job(
            spec.clone(),
            failed(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        );
        assert_eq!(job_record(&b).unwrap().outcome, JobOutcome::Lost);
        // Legacy Jobs (backoffLimit 0, no policy): every failure is the scenario's, as upstream.
        let legacy = job(
            json!({"backoffLimit": 0, "template": {}}),
            failed("BackoffLimitExceeded", ""),
        );
        assert_eq!(job_record(&legacy).unwrap().outcome, JobOutcome::Failed);
        let running = job(spec, json!({"active": 1}));
        assert!(job_record(&running).is_none());
    }

    #[test]
    fn pods_refine_why_a_run_was_lost() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let oom = pod(
            json!({"metadata": {"name": "p1", "creationTimestamp": "2026-01-01T00:00:01Z"}, "status": {"phase": "Failed", "containerStatuses": [
            {"name": "robovast", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}),
        );
        let mut r = JobRecord::new(JobOutcome::Lost);
        r.reason = Some("infrastructure failures exceeded the backoff limit".into());
        refine(&mut r, &[oom]);
        assert_eq!(
            (r.reason.as_deref(), r.exit_code),
            (Some("OOMKilled"), Some(137))
        );
        let pre = pod(
            json!({"metadata": {"name": "p2"}, "status": {"phase": "Failed", "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]}}),
        );
        let (why, _, disrupted) = pod_failure(&pre);
        assert!(disrupted && why.unwrap().starts_with("preempted"));
        let mut d = JobRecord::new(JobOutcome::Lost);
        d.reason = Some("deadline exceeded".into());
        refine(&mut d, &[]);
        assert_eq!(
            d.reason.as_deref(),
            Some("deadline exceeded (never started)")
        );
    }

    #[test]
    fn the_record_counts_each_runs_latest_attempt() {
        let mut rec = RunRecord {
            jobs: vec!["r1-a-0".into(), "r1-b-0".into(), "r1-c-0".into()],
            ..Default::default()
        };
        rec.record("r1-a-0", JobRecord::new(JobOutcome::Succeeded));
        rec.record("r1-b-0", JobRecord::new(JobOutcome::Lost));
        rec.attempts.insert("r1-b-0".into(), 2);
        assert_eq!(rec.latest("r1-b-0"), "r1-b-0-a2");
        let v = rec.verdicts();
        assert_eq!((v.succeeded, v.lost, v.open, v.resubmitted), (1, 0, 2, 1));
        rec.record("r1-b-0-a2", JobRecord::new(JobOutcome::Succeeded));
        rec.record("r1-c-0", JobRecord::new(JobOutcome::Failed));
        let v = rec.verdicts();
        assert_eq!((v.succeeded, v.failed, v.lost, v.open), (2, 1, 0, 0));
        // Outcomes, once seen, never change.
        assert!(!rec.record("r1-a-0", JobRecord::new(JobOutcome::Failed)));
        assert_eq!(
            crate::manifests::job::base_job_name("r1-b-0-a2"),
            ("r1-b-0", 2)
        );
        assert_eq!(
            crate::manifests::job::base_job_name("r1-x-3"),
            ("r1-x-3", 1)
        );
        assert_eq!(
            crate::manifests::job::base_job_name("r1-a-0"),
            ("r1-a-0", 1)
        );
    }
}
