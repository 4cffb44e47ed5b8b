//! `vast execution cluster wait [--run-id R] [--timeout DUR] [--stall-timeout DUR] [--json]
//! [-x CTX]`: waits until every scenario run of a run (default: the newest) has a verdict and
//! says by its exit code how it ended, for CI:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every run succeeded |
//! | 1 | some run failed or stayed lost (or the cluster stayed unreachable) |
//! | 2 | usage error or unknown run |
//! | 3 | `--timeout` passed first |
//! | 4 | stalled: no Job started or finished for `--stall-timeout` (the message names Kueue's reason) |
//!
//! It never changes the cluster: it lists the run's Jobs every poll, adds the outcomes it
//! observes to the run's record (with their failure evidence, in the run's bucket) and reads
//! what the run's executor recorded. A lost run is final only when no process executes the
//! run (a `run --follow` still running re-submits it). API errors are retried at the next
//! poll within a [`FailureBudget`] that only a successful poll resets.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::cli::output::{self, print_json};
use crate::cli::{args::WaitArgs, ExitStatus, Globals, UsageError};
use crate::engine::retry::FailureBudget;
use crate::ops::runs::{job_state, JobOutcome, JobState, RunRecord};
use crate::store::StateDir;

/// Errors in a row (or the time over which they spread) after which `wait` gives up a
/// cluster it cannot reach.
const MAX_ERRORS: u32 = 30;
const MAX_ERROR_TIME: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Serialize)]
struct Report {
    run_id: String,
    /// succeeded | failed | timeout | stalled | unreachable
    result: String,
    exit_code: u8,
    total: usize,
    succeeded: usize,
    failed: usize,
    lost: usize,
    running: usize,
    pending: usize,
    resubmitted: usize,
    message: String,
    waited_s: f64,
}

fn newest(state_dir: &std::path::Path) -> Option<String> {
    RunRecord::load_all(state_dir)
        .into_iter()
        .filter(|(r, _)| !r.jobs.is_empty())
        .map(|(r, _)| r.run_id)
        .max()
}

pub async fn run(args: WaitArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let state_dir = globals.state_dir();
    let id = match &args.run_id {
        Some(id) => id.clone(),
        None => newest(&state_dir)
            .ok_or_else(|| UsageError(format!("no run to wait for in {}", state_dir.display())))?,
    };
    let mut record = match RunRecord::load(&state_dir, &id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(UsageError(format!(
                "unknown run '{id}' (no record in {})",
                state_dir.display()
            ))
            .into())
        }
        Err(e) => return Err(UsageError(e).into()),
    };
    let context = args.context.clone().or(record.context.clone());
    let namespace = record.namespace.clone();
    let dir = StateDir::new(&state_dir);
    let client = crate::cluster::client::client(context.as_deref())
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let poll = Duration::from_millis(
        std::env::var("VAST_WAIT_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000u64)
            .max(10),
    );
    let bucket = crate::ops::run::bucket(&id);
    let started = Instant::now();
    let mut budget = FailureBudget::new(MAX_ERRORS, MAX_ERROR_TIME);
    let mut last_change = Instant::now();
    let mut last_seen: Option<(usize, usize)> = None;
    let mut s3c: crate::ops::evidence::LazyS3 = None;
    let mut said = String::new();
    let finish = |record: &RunRecord,
                  result: &str,
                  code: ExitStatus,
                  running: usize,
                  pending: usize,
                  message: String| {
        let v = record.verdicts();
        Report {
            run_id: record.run_id.clone(),
            result: result.to_string(),
            exit_code: code.code(),
            total: record.jobs.len(),
            succeeded: v.succeeded,
            failed: v.failed,
            lost: v.lost,
            running,
            pending,
            resubmitted: v.resubmitted,
            message,
            waited_s: started.elapsed().as_secs_f64(),
        }
    };
    let (report, status) = loop {
        // What the executor recorded since (outcomes, attempts).
        if let Ok(Some(fresh)) = RunRecord::load(&state_dir, &id) {
            record.merge(fresh);
        }
        // One pass over the run's Jobs, a page at a time (constant memory at any size): the
        // outcomes seen are recorded with their evidence, the rest counted.
        let mut pass = Pass::default();
        let mut lp = ListParams::default()
            .labels(&crate::cluster::runs::selector(Some(&id)))
            .limit(PAGE);
        let listed = loop {
            let page = match jobs.list(&lp).await {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            for j in &page.items {
                pass.see(j);
                pass.changed |= crate::ops::evidence::observe(
                    &client,
                    &namespace,
                    &bucket,
                    j,
                    &mut record,
                    &mut s3c,
                )
                .await;
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break Ok(()),
            }
        };
        if let Err(e) = listed {
            if pass.changed {
                let _ = record.save(&state_dir);
            }
            let text = crate::cluster::error::message(&e);
            if let Err(spent) = budget.failure() {
                let msg = format!("cannot reach the cluster: {spent}; last error: {text}");
                break (
                    finish(&record, "unreachable", ExitStatus::Failure, 0, 0, msg),
                    ExitStatus::Failure,
                );
            }
            tracing::warn!("listing the run's Jobs: {text} (retrying)");
            tokio::time::sleep(poll).await;
            continue;
        }
        budget.progress();
        let Pass {
            running,
            pending,
            present,
            changed,
            pending_uids,
        } = pass;
        if changed {
            if let Err(e) = record.save(&state_dir) {
                tracing::warn!("cannot update the run's record: {e}");
            }
        }
        let executing = dir.holder(&id).ok().flatten().is_some();
        let mut open = 0;
        let mut vanished = 0;
        let mut lost_pending_retry = 0;
        for (_, n, r) in record.latest_outcomes() {
            match r {
                None if present.contains(&n) => open += 1,
                // Not created yet while the run submits, or re-submission underway.
                None if executing || !record.submitted => open += 1,
                None => vanished += 1,
                Some(r) if r.outcome == JobOutcome::Lost && executing => lost_pending_retry += 1,
                Some(_) => {}
            }
        }
        let v = record.verdicts();
        let now = (running, v.decided() + vanished);
        if last_seen != Some(now) {
            last_seen = Some(now);
            last_change = Instant::now();
        }
        let line = format!(
            "{}: {} of {} runs have a verdict ({} succeeded, {} failed, {} lost), {running} running, {pending} pending",
            id,
            v.decided(),
            record.jobs.len(),
            v.succeeded,
            v.failed,
            v.lost
        );
        if line != said && globals.verbosity >= 0 {
            output::note(&line);
            said = line;
        }
        if open == 0 && lost_pending_retry == 0 {
            let lost = v.lost + vanished;
            let (result, code) = if v.failed + lost == 0 {
                ("succeeded", ExitStatus::Success)
            } else {
                ("failed", ExitStatus::Failure)
            };
            let mut msg = format!(
                "{}: {} succeeded, {} failed, {lost} lost",
                output::plural(record.jobs.len() as u64, "run"),
                v.succeeded,
                v.failed
            );
            if vanished > 0 {
                msg.push_str(&format!(
                    " ({vanished} vanished before their outcome was observed)"
                ));
            }
            if lost > 0 {
                msg.push_str(&format!(
                    "; re-submit the lost ones with: vast execution cluster rerun {id}"
                ));
            }
            let mut r = finish(&record, result, code, running, pending, msg);
            r.lost = lost;
            break (r, code);
        }
        if let Some(t) = args.timeout {
            if started.elapsed() >= t {
                let msg = format!(
                    "timed out after {} with {} unfinished",
                    humanize(t),
                    output::plural(open as u64, "run")
                );
                break (
                    finish(
                        &record,
                        "timeout",
                        ExitStatus::Timeout,
                        running,
                        pending,
                        msg,
                    ),
                    ExitStatus::Timeout,
                );
            }
        }
        if let Some(st) = args.stall_timeout.or(Some(DEFAULT_STALL)) {
            if last_change.elapsed() >= st {
                let why = kueue_reason(&client, &namespace, &pending_uids).await;
                let msg = format!(
                    "stalled: no Job started or finished for {}; {why}",
                    humanize(st)
                );
                break (
                    finish(
                        &record,
                        "stalled",
                        ExitStatus::Stalled,
                        running,
                        pending,
                        msg,
                    ),
                    ExitStatus::Stalled,
                );
            }
        }
        tokio::time::sleep(poll).await;
    };
    if args.json {
        print_json(&report)?;
    } else {
        let mark = if status == ExitStatus::Success {
            "✓"
        } else {
            "✗"
        };
        output::result(format!("{mark} {}", report.message));
    }
    Ok(status)
}

/// Why the run's pending Jobs wait, as Kueue says it (the first pending Job's reason).
async fn kueue_reason(client: &kube::Client, namespace: &str, pending: &[String]) -> String {
    if pending.is_empty() {
        return "no Job is pending (running Jobs made no progress)".into();
    }
    let reasons = crate::cluster::kueue::pending_reasons(client, namespace).await;
    for uid in pending {
        if let Some((Some(r), _)) = reasons.get(uid) {
            return format!(
                "{} pending; Kueue: {r}",
                output::plural(pending.len() as u64, "Job")
            );
        }
    }
    format!(
        "{} pending; Kueue gave no reason (is the ClusterQueue active?)",
        output::plural(pending.len() as u64, "Job")
    )
}

/// `--stall-timeout` when not given: the bound of a wait nothing else ends.
const DEFAULT_STALL: Duration = Duration::from_secs(24 * 3600);

/// Jobs listed per request.
const PAGE: u32 = 250;

/// What one pass over the run's Jobs counted.
#[derive(Default)]
struct Pass {
    running: usize,
    pending: usize,
    present: BTreeSet<String>,
    changed: bool,
    /// uids of the pending Jobs (for Kueue's reason).
    pending_uids: Vec<String>,
}

impl Pass {
    fn see(&mut self, j: &Job) {
        match job_state(j) {
            JobState::Running => self.running += 1,
            JobState::Pending => {
                self.pending += 1;
                if let Some(u) = &j.metadata.uid {
                    self.pending_uids.push(u.clone());
                }
            }
            _ => {}
        }
        if let Some(n) = &j.metadata.name {
            self.present.insert(n.clone());
        }
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
