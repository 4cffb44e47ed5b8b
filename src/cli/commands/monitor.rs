//! `vast execution cluster monitor [-i SECS] [--once] [--json] [-x CTX]`: upstream's progress
//! lines per run (bar, %, finished/total, ok, fail, running, pending, jobs/min, ETA) for one
//! context or every context of the `.vast` file (each with the namespace of its own saved
//! setup), plus what Kueue users ask for: why Jobs are pending (the Workload's condition
//! message) and the queue position of the next one.
//!
//! Counting: `ok`/`fail` come from what was observed, merged into the run's record
//! ([`RunRecord`], shared with `run --follow`), so Jobs deleted by `ttlSecondsAfterFinished`
//! stay counted; Jobs that vanished unobserved are shown as `unknown`, never as successful.
//!
//! On a terminal the lines are redrawn in place ([`crate::progress::Redraw`]: a line longer
//! than the terminal is counted with its wrapped height, so no redraw leaves stale lines);
//! otherwise each poll's lines are printed, followed by an empty line.
//!
//! An unreachable context keeps the monitor going only for [`MAX_UNREACHABLE`] of failed polls
//! (a [`FailureBudget`] that a successful poll resets): then it is given up, and once nothing
//! else keeps the monitor going it exits 1 naming the context and its last error.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::cluster_common::target_with;
use crate::cli::{args::MonitorArgs, ExitStatus, Globals, UsageError};
use crate::engine::retry::FailureBudget;
use crate::ops::runs::{self, count_run, JobState, PendingJob, RunLine, RunRecord};
use crate::project::files::read_setup;
use crate::project::resources::{active_kube_context, config_context_names};

/// How long a context may fail every poll before the monitor stops waiting for it.
pub const MAX_UNREACHABLE: Duration = Duration::from_secs(5 * 60);

/// One context to watch.
#[derive(Debug, Clone)]
struct Watched {
    label: String,
    context: Option<String>,
    namespace: String,
}

/// One context as shown.
#[derive(Debug, Clone, Serialize)]
pub struct ContextView {
    pub label: String,
    pub context: Option<String>,
    pub namespace: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub runs: Vec<RunLine>,
}

/// Rate tracking per run (upstream: once ≥ 10 s passed since the first poll with finished > 0
/// and more have finished since).
#[derive(Default)]
struct Rate {
    first: Option<(Instant, u64)>,
}

/// `[████░░░…]` of 20 characters.
pub fn bar(fraction: f64) -> String {
    let filled = ((fraction.clamp(0.0, 1.0)) * 20.0).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(20 - filled))
}

/// Upstream's line (plus `, N lost` for runs lost by the infrastructure and `, N unknown` when
/// some outcomes were never observed).
pub fn render_line(indent: &str, r: &RunLine) -> String {
    let pct = if r.total == 0 {
        100.0
    } else {
        r.finished as f64 * 100.0 / r.total as f64
    };
    let mut unknown = if r.lost > 0 {
        format!(", {} lost", r.lost)
    } else {
        String::new()
    };
    if r.unknown > 0 {
        unknown.push_str(&format!(", {} unknown", r.unknown));
    }
    let mut s = format!(
        "{indent}{}  [{}]  {:>7}  {}/{}  ({} ok, {} fail{unknown})  Running: {}  Pending: {}",
        r.run_id,
        bar(pct / 100.0),
        format!("{pct:.1}%"),
        r.finished,
        r.total,
        r.ok,
        r.fail,
        r.running,
        r.pending
    );
    if let Some(rate) = r.rate_per_min {
        s.push_str(&format!("  {rate:.1} jobs/min"));
    }
    if let Some(eta) = &r.eta {
        s.push_str(&format!("  ETA ~{eta}"));
    }
    s
}

/// The pending-reason line under a run (first pending Job's reason and position).
pub fn render_pending(indent: &str, r: &RunLine) -> Option<String> {
    let p = r
        .pending_jobs
        .iter()
        .find(|p| p.reason.is_some() || p.position.is_some())?;
    let mut s = format!(
        "{indent}  pending: {}",
        p.reason.as_deref().unwrap_or("waiting for admission")
    );
    if let Some(pos) = p.position {
        s.push_str(&format!(" (next in queue at position {pos})"));
    }
    Some(s)
}

/// Every line of one poll.
pub fn render(views: &[ContextView], multi: bool) -> Vec<String> {
    let mut out = Vec::new();
    for v in views {
        let indent = if multi { "  " } else { "" };
        if multi {
            out.push(format!(
                "[{}]{}",
                v.label,
                if v.reachable { "" } else { " (unreachable)" }
            ));
        } else if !v.reachable {
            if v.runs.is_empty() {
                out.push("(unreachable)".into());
            } else {
                out.push("(unreachable - showing last known state)".into());
            }
        }
        if multi && !v.reachable && v.runs.is_empty() {
            out.push(format!("{indent}(unreachable)"));
        }
        for r in &v.runs {
            out.push(render_line(indent, r));
            if let Some(p) = render_pending(indent, r) {
                out.push(p);
            }
        }
    }
    out
}

struct Poller {
    state_dir: PathBuf,
    seen: BTreeMap<(String, String), (u64, u64)>,
    rates: BTreeMap<(String, String), Rate>,
    /// Per context: the S3 client failure evidence is written with (opened on first use).
    s3: BTreeMap<String, crate::ops::evidence::LazyS3>,
    last: BTreeMap<String, ContextView>,
}

impl Poller {
    async fn poll(&mut self, w: &Watched) -> ContextView {
        match self.poll_once(w).await {
            Ok(v) => {
                self.last.insert(w.label.clone(), v.clone());
                v
            }
            Err(e) => {
                let mut v = self.last.get(&w.label).cloned().unwrap_or(ContextView {
                    label: w.label.clone(),
                    context: w.context.clone(),
                    namespace: w.namespace.clone(),
                    reachable: false,
                    error: None,
                    runs: Vec::new(),
                });
                v.reachable = false;
                v.error = Some(e);
                v
            }
        }
    }

    async fn poll_once(&mut self, w: &Watched) -> Result<ContextView, String> {
        let client = crate::cluster::client::client(w.context.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &w.namespace);
        let listed = jobs
            .list(&ListParams::default().labels(&crate::cluster::runs::selector(None)))
            .await
            .map_err(|e| super::cluster_common::call_error(&e, w.context.as_deref()))?;
        let kueue = crate::cluster::kueue::pending_reasons(&client, &w.namespace).await;
        let mut by_run: BTreeMap<String, Vec<&Job>> = BTreeMap::new();
        for j in &listed.items {
            let id = j
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("run-id"))
                .cloned()
                .unwrap_or_else(|| "<legacy>".into());
            by_run.entry(id).or_default().push(j);
        }
        // The records are read once per context and poll. Runs of this context that vast recorded
        // recently are shown even with no Job left.
        let recent = Duration::from_secs(24 * 3600);
        let mut records: BTreeMap<String, RunRecord> = BTreeMap::new();
        for (rec, modified) in RunRecord::load_all(&self.state_dir) {
            let fresh = modified.elapsed().is_ok_and(|age| age < recent);
            let id = crate::manifests::job::label_safe(&rec.run_id);
            if rec.namespace == w.namespace && rec.context == w.context && rec.submitted && fresh {
                by_run.entry(id.clone()).or_default();
            }
            records.insert(id, rec);
        }
        let mut out = Vec::new();
        for (id, jobs) in &by_run {
            let mut record = records.remove(id);
            let key = (w.label.clone(), id.clone());
            let seen = self.seen.entry(key.clone()).or_default();
            let before: std::collections::BTreeSet<String> = record
                .as_ref()
                .map(|r| r.finished.keys().cloned().collect())
                .unwrap_or_default();
            let (mut line, changed) = count_run(id, jobs, &mut record, seen);
            if let Some(r) = record.as_mut().filter(|_| changed) {
                // Failure evidence of the runs that just ended failed or lost.
                for j in jobs {
                    let Some(name) = j.metadata.name.as_ref() else {
                        continue;
                    };
                    if before.contains(name) {
                        continue;
                    }
                    let Some(mut rec) = r.finished.get(name).cloned() else {
                        continue;
                    };
                    if rec.outcome == runs::JobOutcome::Succeeded {
                        continue;
                    }
                    crate::ops::evidence::keep(
                        &client,
                        &w.namespace,
                        id,
                        j,
                        &mut rec,
                        self.s3.entry(w.label.clone()).or_default(),
                    )
                    .await;
                    r.finished.insert(name.clone(), rec);
                }
            }
            if changed {
                if let Some(r) = &record {
                    if let Err(e) = r.save(&self.state_dir) {
                        tracing::debug!("cannot update the record of {id}: {e}");
                    }
                }
            }
            if jobs.is_empty() && record.is_none() {
                continue;
            }
            for j in jobs {
                if runs::job_state(j) != JobState::Pending {
                    continue;
                }
                let uid = j.metadata.uid.clone().unwrap_or_default();
                let (reason, position) = kueue.get(&uid).cloned().unwrap_or((None, None));
                line.pending_jobs.push(PendingJob {
                    job: j.metadata.name.clone().unwrap_or_default(),
                    reason,
                    position,
                });
            }
            line.pending_jobs
                .sort_by_key(|p| p.position.unwrap_or(usize::MAX));
            let rate = self.rates.entry(key).or_default();
            let now = Instant::now();
            match rate.first {
                None if line.finished > 0 => rate.first = Some((now, line.finished)),
                Some((t0, f0)) if line.finished > f0 && line.running + line.pending > 0 => {
                    let secs = now.duration_since(t0).as_secs_f64();
                    if secs >= 10.0 {
                        let per_min = (line.finished - f0) as f64 * 60.0 / secs;
                        line.rate_per_min = Some(per_min);
                        let left = (line.running + line.pending) as f64;
                        let eta = jiff::Zoned::now()
                            .checked_add(jiff::SignedDuration::from_secs_f64(left / per_min * 60.0))
                            .map(|z| z.strftime("%H:%M").to_string())
                            .ok();
                        line.eta = eta;
                    }
                }
                _ => {}
            }
            out.push(line);
        }
        Ok(ContextView {
            label: w.label.clone(),
            context: w.context.clone(),
            namespace: w.namespace.clone(),
            reachable: true,
            error: None,
            runs: out,
        })
    }
}

pub async fn run(args: MonitorArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    if !(args.interval > 0.0 && args.interval <= 86_400.0) {
        return Err(UsageError(format!(
            "--interval must be a positive number of seconds (got {})",
            args.interval
        ))
        .into());
    }
    let t = target_with(globals, args.context.clone(), false, false)?;
    let project_dir = t.project_dir();
    let namespace_of = |ctx: Option<&str>| -> String {
        project_dir
            .as_ref()
            .and_then(|d| read_setup(d, ctx, ctx.is_some()).ok().flatten())
            .map(|s| s.namespace().to_string())
            .unwrap_or_else(|| t.namespace())
    };
    let watched: Vec<Watched> = match &args.context {
        Some(c) => vec![Watched {
            label: c.clone(),
            context: Some(c.clone()),
            namespace: t.namespace(),
        }],
        None => {
            let vast = globals
                .vast_file
                .clone()
                .or_else(|| t.project.as_ref().map(|p| p.config.clone()));
            let names: BTreeSet<String> =
                vast.map(|v| config_context_names(&v)).unwrap_or_default();
            if names.is_empty() {
                let active = active_kube_context();
                vec![Watched {
                    label: active.clone().unwrap_or_else(|| "(active)".into()),
                    namespace: namespace_of(active.as_deref()),
                    context: active,
                }]
            } else {
                names
                    .into_iter()
                    .map(|n| Watched {
                        label: n.clone(),
                        namespace: namespace_of(Some(&n)),
                        context: Some(n),
                    })
                    .collect()
            }
        }
    };
    let multi = watched.len() > 1;
    let mut poller = Poller {
        state_dir: globals.state_dir(),
        seen: BTreeMap::new(),
        rates: BTreeMap::new(),
        s3: BTreeMap::new(),
        last: BTreeMap::new(),
    };
    let tty = std::io::stdout().is_terminal();
    if !args.once && !args.json {
        let what = if multi {
            "configured contexts".to_string()
        } else {
            format!("context '{}'", watched[0].label)
        };
        crate::cli::output::status(format!(
            "Monitoring scenario run jobs on {what} (press Ctrl+C to stop)...\n"
        ));
    }
    let mut redraw = (tty && !args.once && !args.json).then(crate::progress::Redraw::stdout);
    // Per context: failed polls since the last successful one, and why it was given up.
    let mut budgets: Vec<FailureBudget> = watched
        .iter()
        .map(|_| FailureBudget::new(u32::MAX, MAX_UNREACHABLE))
        .collect();
    let mut given_up: Vec<Option<String>> = vec![None; watched.len()];
    loop {
        let mut views = Vec::new();
        for (i, w) in watched.iter().enumerate() {
            let v = poller.poll(w).await;
            if v.reachable {
                budgets[i].progress();
                given_up[i] = None;
            } else if given_up[i].is_none() {
                if let Err(spent) = budgets[i].failure() {
                    given_up[i] = Some(format!(
                        "context '{}' is unreachable ({} failed polls in {} s): {}",
                        w.label,
                        spent.failures,
                        spent.elapsed.as_secs(),
                        v.error.as_deref().unwrap_or("no answer")
                    ));
                }
            }
            views.push(v);
        }
        let lines = render(&views, multi);
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&serde_json::json!({"contexts": views}))?
            )?;
        } else if let Some(r) = redraw.as_mut() {
            r.show(&lines);
        } else {
            for l in &lines {
                writeln!(out, "{l}")?;
            }
            if !args.once && !lines.is_empty() {
                writeln!(out)?;
            }
        }
        out.flush()?;
        drop(out);
        if args.once {
            // One context that could not be read at all: say which and why, exit 1 (with
            // several, the others' lines are the answer and the unreachable one is marked).
            if let [v] = views.as_slice() {
                if !v.reachable && v.runs.is_empty() {
                    crate::cli::output::error(format!(
                        "✗ Error: context '{}' is unreachable: {}",
                        v.label,
                        v.error.as_deref().unwrap_or("no answer")
                    ));
                    return Ok(ExitStatus::Failure);
                }
            }
            return Ok(ExitStatus::Success);
        }
        let active = views.iter().zip(&given_up).any(|(v, gave_up)| {
            gave_up.is_none() && (!v.reachable || v.runs.iter().any(|r| r.running + r.pending > 0))
        });
        if !active {
            if let Some(r) = redraw.take() {
                r.leave();
            }
            let gave_up: Vec<&String> = given_up.iter().flatten().collect();
            if !gave_up.is_empty() {
                for g in gave_up {
                    crate::cli::output::error(format!("✗ Error: {g}; stopped waiting for it"));
                }
                return Ok(ExitStatus::Failure);
            }
            if !args.json {
                println!();
                println!("All jobs finished.");
            }
            return Ok(ExitStatus::Success);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(args.interval)) => {}
            _ = tokio::signal::ctrl_c() => {
                if let Some(r) = redraw.take() {
                    r.leave();
                }
                println!();
                return Ok(ExitStatus::Success);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::runs::JobOutcome;

    fn line() -> RunLine {
        RunLine {
            run_id: "run-1".into(),
            total: 10,
            finished: 4,
            ok: 3,
            fail: 1,
            lost: 0,
            unknown: 0,
            running: 2,
            pending: 4,
            rate_per_min: Some(2.5),
            eta: Some("12:34".into()),
            pending_jobs: vec![],
        }
    }

    #[test]
    fn upstream_line_format() {
        assert_eq!(
            render_line("", &line()),
            "run-1  [████████░░░░░░░░░░░░]    40.0%  4/10  (3 ok, 1 fail)  Running: 2  Pending: 4  2.5 jobs/min  ETA ~12:34"
        );
        let mut l = line();
        l.unknown = 2;
        l.rate_per_min = None;
        l.eta = None;
        assert_eq!(
            render_line("  ", &l),
            "  run-1  [████████░░░░░░░░░░░░]    40.0%  4/10  (3 ok, 1 fail, 2 unknown)  Running: 2  Pending: 4"
        );
    }

    fn job(name: &str, status: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {"total-job-num": "4"}},
            "spec": {"backoffLimit": 0, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn vanished_jobs_are_unknown_not_ok() {
        let a = job("a", serde_json::json!({"succeeded": 1}));
        let b = job("b", serde_json::json!({"active": 1}));
        let mut seen = (0, 0);
        // No record: 4 total by annotation, 2 listed; the 2 missing are unknown.
        let (l, _) = count_run("r", &[&a, &b], &mut None, &mut seen);
        assert_eq!(
            (l.total, l.finished, l.ok, l.fail, l.unknown, l.running),
            (4, 3, 1, 0, 2, 1)
        );
        // With a record that saw one failure before it vanished.
        let mut rec = Some(RunRecord {
            run_id: "r".into(),
            jobs: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            finished: [("c".to_string(), runs::JobRecord::new(JobOutcome::Failed))].into(),
            submitted: false,
            ..Default::default()
        });
        // Still submitting: d is not created yet, so it is pending (c failed, a succeeded).
        let (l, changed) = count_run("r", &[&a, &b], &mut rec, &mut seen);
        assert!(changed, "a's success is recorded");
        assert_eq!(
            (l.ok, l.fail, l.unknown, l.pending, l.finished),
            (1, 1, 0, 1, 2)
        );
        // Every Job was created: d vanished unobserved, so it is unknown.
        rec.as_mut().unwrap().submitted = true;
        let (l, _) = count_run("r", &[&a, &b], &mut rec, &mut seen);
        assert_eq!(
            (l.ok, l.fail, l.unknown, l.pending, l.finished),
            (1, 1, 1, 0, 3)
        );
    }
}
