//! `vast runs list|show|events|graph`. `list` and `show` of an executing run read its snapshot
//! (they never wait for the executor); otherwise `show`, `events` and `graph` open the journal.
//!
//! JSON (stable; fields are only added):
//! - `runs list --json`: array, oldest first, of `{id, operation, status, started_at,
//!   updated_at, message, executing_pid}`;
//! - `runs show --json`: the run view (`id, operation, status, started_at, updated_at, message,
//!   params, events, steps[{key, name, child, implementation, status, attempts, max_attempts,
//!   errors[{attempt, at, kind, message}], next_retry_at, progress{done,total}, cursor, map}]`)
//!   plus `executing_pid`;
//! - `runs events --json`: array of `{seq, at, type, step, attempt, description}`;
//! - `runs graph --json`: `{operation, nodes[{name, implementation, after, inputs, map_over,
//!   map_concurrency, status}], edges[[from, to]]}`.

use serde_json::{json, Value};

use crate::cli::args::{GraphFormat, RunsCommand};
use crate::cli::output::{print_json, print_run, print_table};
use crate::cli::{ExitStatus, Globals, UsageError};
use crate::engine::journal::{render_ms, EventKind, RunState};
use crate::engine::view::RunView;
use crate::engine::Definition;
use crate::store::StateDir;

use crate::cli::execute::store_error;

pub async fn run(cmd: RunsCommand, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let dir = StateDir::new(globals.state_dir());
    match cmd {
        RunsCommand::List { json } => list(&dir, json),
        RunsCommand::Show { run_id, json } => show(&dir, &run_id, json),
        RunsCommand::Events { run_id, json } => events(&dir, &run_id, json),
        RunsCommand::Graph {
            target,
            format,
            json,
        } => graph(&dir, &target, format, json),
        RunsCommand::Prune {
            older_than,
            keep,
            include_unfinished,
            dry_run,
        } => prune(
            &dir,
            globals,
            Prune {
                older_than,
                keep,
                include_unfinished,
                dry_run,
            },
        ),
    }
}

struct Prune {
    older_than: Option<std::time::Duration>,
    keep: Option<usize>,
    include_unfinished: bool,
    dry_run: bool,
}

/// `vast runs prune`: removes the runs that are finished (succeeded or failed; the others only
/// with `--include-unfinished`), not executing, older than `--older-than` and not among the
/// `--keep` newest of those; each with its work directory.
fn prune(dir: &StateDir, globals: &Globals, p: Prune) -> anyhow::Result<ExitStatus> {
    if p.older_than.is_none() && p.keep.is_none() {
        return Err(UsageError(
            "runs prune needs --older-than DUR and/or --keep N (e.g. `vast runs prune --older-than 7d`)"
                .into(),
        )
        .into());
    }
    // Runs last active after this are kept (and so are runs whose time cannot be read).
    let cutoff = p.older_than.map(|age| {
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(age).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(jiff::Timestamp::MIN)
    });
    let mut candidates = Vec::new();
    let mut executing = 0;
    for e in dir.list().map_err(store_error)? {
        if e.holder.is_some() {
            executing += 1;
            continue;
        }
        let view = e.snapshot.ok().flatten();
        let status = view
            .as_ref()
            .map(|v| v.status.as_str())
            .unwrap_or("unknown");
        let finished = matches!(status, "succeeded" | "failed");
        if !finished && !p.include_unfinished {
            continue;
        }
        let time = |t: Option<&str>| t.and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let started = time(view.as_ref().map(|v| v.started_at.as_str()));
        let updated = time(view.as_ref().map(|v| v.updated_at.as_str())).or(started);
        if let Some(cutoff) = cutoff {
            if updated.is_none_or(|u| u > cutoff) {
                continue;
            }
        }
        candidates.push((started, e.id, status.to_string()));
    }
    // Newest first, so `--keep N` keeps the first N.
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let keep = p.keep.unwrap_or(0).min(candidates.len());
    let state_dir = globals.state_dir();
    let mut removed = 0;
    for (_, id, status) in candidates.iter().skip(keep) {
        if p.dry_run {
            println!("would remove {id} ({status})");
            removed += 1;
            continue;
        }
        match dir.remove_run(id) {
            Ok(()) => {
                let w = crate::ops::runs::work_dir(&state_dir, id);
                if let Err(e) = std::fs::remove_dir_all(&w) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        crate::cli::output::warn(format!(
                            "warning: cannot remove {}: {e}",
                            w.display()
                        ));
                    }
                }
                println!("removed {id} ({status})");
                removed += 1;
            }
            // Started by another process since it was listed: left alone.
            Err(crate::store::StoreError::Lease(_)) => executing += 1,
            Err(e) => return Err(store_error(e)),
        }
    }
    let runs = |n: usize| if n == 1 { "run" } else { "runs" };
    println!(
        "{} {removed} {}; kept {keep} {}{}",
        if p.dry_run { "Would remove" } else { "Removed" },
        runs(removed),
        runs(keep),
        if executing > 0 {
            format!("; {executing} being executed left alone")
        } else {
            String::new()
        }
    );
    Ok(ExitStatus::Success)
}

fn list(dir: &StateDir, json: bool) -> anyhow::Result<ExitStatus> {
    let mut rows = Vec::new();
    for e in dir.list().map_err(store_error)? {
        let pid = e.holder.as_ref().map(|h| h.pid);
        let (operation, mut status, started, updated, message) = match &e.snapshot {
            Ok(Some(v)) => (
                v.operation.clone(),
                v.status.clone(),
                v.started_at.clone(),
                v.updated_at.clone(),
                v.message.clone(),
            ),
            Ok(None) => (
                String::new(),
                "unknown".into(),
                String::new(),
                String::new(),
                "no snapshot yet".into(),
            ),
            Err(err) => (
                String::new(),
                "unknown".into(),
                String::new(),
                String::new(),
                format!("snapshot unreadable: {err}"),
            ),
        };
        if status == "running" && pid.is_none() {
            status = "interrupted".into();
        }
        rows.push(json!({
            "id": e.id, "operation": operation, "status": status, "started_at": started,
            "updated_at": updated, "message": message, "executing_pid": pid,
        }));
    }
    sort_newest_last(&mut rows);
    if json {
        print_json(&rows)?;
    } else {
        let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let status = match r["executing_pid"].as_u64() {
                    Some(pid) => format!("{} (pid {pid})", s(r, "status")),
                    None => s(r, "status"),
                };
                vec![s(r, "id"), s(r, "operation"), status, s(r, "started_at")]
            })
            .collect();
        print_table(&["ID", "OPERATION", "STATUS", "STARTED"], &table)?;
    }
    Ok(ExitStatus::Success)
}

/// Sorts `runs list` rows by start time (parsed, not as text), newest last; rows without a
/// readable time first, ties by id.
fn sort_newest_last(rows: &mut [Value]) {
    let key = |r: &Value| {
        (
            r["started_at"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
            r["id"].as_str().unwrap_or_default().to_string(),
        )
    };
    rows.sort_by_key(key);
}

fn check_id(id: &str) -> anyhow::Result<()> {
    crate::engine::RunId::parse(id)
        .map(|_| ())
        .map_err(|e| UsageError(e.to_string()).into())
}

/// The run's state from its journal, or `None` while another process executes it.
fn load(dir: &StateDir, id: &str) -> anyhow::Result<Option<RunState>> {
    if !dir.exists(id) {
        return Err(UsageError(format!(
            "unknown run '{id}' (no {})",
            dir.run_dir(id).display()
        ))
        .into());
    }
    if dir.holder(id).map_err(store_error)?.is_some() {
        return Ok(None);
    }
    let store = match dir.open_run_for_reading(id) {
        Ok(s) => s,
        // Taken by an executor between the check and the open: read the snapshot.
        Err(crate::store::StoreError::Lease(_)) => return Ok(None),
        Err(e) => return Err(store_error(e)),
    };
    let state = store.load().map_err(store_error)?;
    let _ = store.write_snapshot(&RunView::from_state(&state));
    Ok(Some(state))
}

fn show(dir: &StateDir, id: &str, json: bool) -> anyhow::Result<ExitStatus> {
    check_id(id)?;
    let (mut view, pid) = match load(dir, id)? {
        Some(state) => (RunView::from_state(&state), None),
        None => {
            let pid = dir.holder(id).map_err(store_error)?.map(|h| h.pid);
            let v = dir
                .snapshot(id)
                .map_err(store_error)?
                .ok_or_else(|| UsageError(format!("run '{id}' is being created; try again")))?;
            (v, pid)
        }
    };
    if view.status == "running" && pid.is_none() {
        view.status = "interrupted".into();
        view.message = format!("the executing process stopped; resume with `vast resume {id}`");
    }
    let record = if matches!(
        view.operation.as_str(),
        "run" | "campaign" | "campaign-share"
    ) {
        crate::ops::runs::RunRecord::load(dir.root(), id)
            .ok()
            .flatten()
    } else {
        None
    };
    if json {
        let mut v = serde_json::to_value(&view)?;
        v["executing_pid"] = json!(pid);
        if let Some(r) = &record {
            v["scenario_runs"] = scenario_runs_json(r);
        }
        print_json(&v)?;
    } else {
        print_run(&view, pid)?;
        if let Some(r) = &record {
            print!("{}", scenario_runs_text(r));
        }
    }
    Ok(ExitStatus::Success)
}

/// The failed and lost scenario runs of a record: (latest Job, record).
fn not_succeeded(r: &crate::ops::runs::RunRecord) -> Vec<(String, crate::ops::runs::JobRecord)> {
    r.latest_outcomes()
        .filter_map(|(_, n, rec)| {
            rec.filter(|x| x.outcome != crate::ops::runs::JobOutcome::Succeeded)
                .map(|x| (n, x.clone()))
        })
        .collect()
}

fn scenario_runs_json(r: &crate::ops::runs::RunRecord) -> Value {
    let v = r.verdicts();
    let runs: Vec<Value> = not_succeeded(r)
        .into_iter()
        .map(|(n, x)| {
            json!({"job": n, "outcome": x.outcome.as_str(), "reason": x.reason,
                   "exit_code": x.exit_code, "evidence": x.evidence})
        })
        .collect();
    json!({"total": r.jobs.len(), "succeeded": v.succeeded, "failed": v.failed, "lost": v.lost,
           "without_verdict": v.open, "resubmitted": v.resubmitted, "not_succeeded": runs})
}

fn scenario_runs_text(r: &crate::ops::runs::RunRecord) -> String {
    let v = r.verdicts();
    let mut out = format!(
        "scenario runs: {} total, {} succeeded, {} failed, {} lost, {} without a verdict yet",
        r.jobs.len(),
        v.succeeded,
        v.failed,
        v.lost,
        v.open
    );
    if v.resubmitted > 0 {
        out.push_str(&format!(
            ", {} re-submitted",
            crate::cli::output::plural(v.resubmitted as u64, "attempt")
        ));
    }
    out.push('\n');
    for (n, x) in not_succeeded(r) {
        out.push_str(&format!(
            "  {} {n}: {}{}\n",
            x.outcome.as_str(),
            x.reason.as_deref().unwrap_or("unknown"),
            x.evidence
                .as_deref()
                .map(|k| format!(
                    " (evidence: s3://{}/{k})",
                    crate::ops::run::bucket(&r.run_id)
                ))
                .unwrap_or_default()
        ));
    }
    out
}

fn events(dir: &StateDir, id: &str, json: bool) -> anyhow::Result<ExitStatus> {
    check_id(id)?;
    if !dir.exists(id) {
        return Err(UsageError(format!("unknown run '{id}'")).into());
    }
    let store = dir.open_run_for_reading(id).map_err(|e| match e {
        crate::store::StoreError::Lease(l) => UsageError(format!(
            "{l}; its journal is readable once it stops (`vast runs show {id}` works now)"
        ))
        .into(),
        other => store_error(other),
    })?;
    let evs = store.events().map_err(store_error)?;
    let rows: Vec<Value> = evs
        .iter()
        .enumerate()
        .map(|(seq, e)| {
            let (ty, step, attempt) = match &e.kind {
                EventKind::RunCreated { .. } => ("run_created", None, None),
                EventKind::RunResumed { .. } => ("run_resumed", None, None),
                EventKind::MapExpanded { step, .. } => ("map_expanded", Some(step.clone()), None),
                EventKind::StepStarted { step, attempt } => ("step_started", Some(step.to_string()), Some(*attempt)),
                EventKind::StepSucceeded { step, .. } => ("step_succeeded", Some(step.to_string()), None),
                EventKind::StepFailed { step, attempt, .. } => ("step_failed", Some(step.to_string()), Some(*attempt)),
                EventKind::CursorSaved { step, .. } => ("cursor_saved", Some(step.to_string()), None),
                EventKind::CheckpointSaved { step, .. } => ("cursor_saved", Some(step.to_string()), None),
                EventKind::StepRearmed { step } => ("step_rearmed", Some(step.to_string()), None),
                EventKind::ItemSkipped { step, .. } => ("item_skipped", Some(step.to_string()), None),
                EventKind::RunFinished { .. } => ("run_finished", None, None),
            };
            json!({"seq": seq, "at": render_ms(e.at_ms), "type": ty, "step": step, "attempt": attempt,
                   "description": e.kind.describe()})
        })
        .collect();
    if json {
        print_json(&rows)?;
    } else {
        for r in &rows {
            println!(
                "{:>6}  {}  {}",
                r["seq"],
                r["at"].as_str().unwrap_or_default(),
                r["description"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitStatus::Success)
}

fn graph(
    dir: &StateDir,
    target: &str,
    format: GraphFormat,
    json: bool,
) -> anyhow::Result<ExitStatus> {
    let (def, view): (Definition, Option<RunView>) =
        if crate::engine::RunId::parse(target).is_ok() && dir.exists(target) {
            match load(dir, target)? {
                Some(state) => (state.definition.clone(), Some(RunView::from_state(&state))),
                None => {
                    let v = dir
                        .snapshot(target)
                        .map_err(store_error)?
                        .ok_or_else(|| UsageError(format!("run '{target}' has no snapshot yet")))?;
                    let def = embedded(&v.operation)?;
                    (def, Some(v))
                }
            }
        } else {
            (embedded(target)?, None)
        };
    let status_of = |name: &str| {
        view.as_ref()
            .and_then(|v| v.steps.iter().find(|s| s.key == name))
            .map(|s| s.status.clone())
    };
    if json {
        let nodes: Vec<Value> = def
            .steps
            .iter()
            .map(|s| {
                json!({"name": s.name, "implementation": s.run, "after": s.after, "inputs": s.inputs,
                       "map_over": s.map.as_ref().map(|m| m.over.clone()),
                       "map_concurrency": s.map.as_ref().map(|m| m.concurrency),
                       "status": status_of(&s.name)})
            })
            .collect();
        let edges: Vec<Value> = def
            .deps
            .iter()
            .enumerate()
            .flat_map(|(i, ds)| ds.iter().map(move |&d| (d, i)))
            .map(|(d, i)| json!([def.steps[d].name, def.steps[i].name]))
            .collect();
        print_json(&json!({"operation": def.operation, "nodes": nodes, "edges": edges}))?;
        return Ok(ExitStatus::Success);
    }
    match format {
        GraphFormat::Dot => print!("{}", def.to_dot()),
        GraphFormat::Text => {
            println!("{} ({})", def.operation, def.source);
            for s in &def.steps {
                let mut line = format!("  {} [{}]", s.name, s.run);
                if !s.after.is_empty() {
                    line.push_str(&format!(" after {}", s.after.join(", ")));
                }
                if let Some(m) = &s.map {
                    line.push_str(&format!(
                        " map over {} (concurrency {})",
                        m.over, m.concurrency
                    ));
                }
                if let Some(st) = status_of(&s.name) {
                    line.push_str(&format!(" — {st}"));
                }
                println!("{line}");
            }
        }
    }
    Ok(ExitStatus::Success)
}

fn embedded(operation: &str) -> anyhow::Result<Definition> {
    match crate::ops::definition(operation) {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(UsageError(e.to_string()).into()),
        None => Err(UsageError(format!(
            "no run or operation named '{operation}' (see `vast runs list`)"
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_by_start_time_newest_last() {
        // Snapshots may hold times rendered with a variable number of fractional digits.
        let mut rows = vec![
            json!({"id": "c", "started_at": "2026-11-28T05:03:59.91Z"}),
            json!({"id": "b", "started_at": "2026-11-28T05:03:59.9Z"}),
            json!({"id": "d", "started_at": "2026-11-28T05:04:00Z"}),
            json!({"id": "a", "started_at": "2026-11-28T05:03:59Z"}),
            json!({"id": "x", "started_at": ""}),
        ];
        sort_newest_last(&mut rows);
        let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
        assert_eq!(ids, ["x", "a", "b", "c", "d"]);
    }
}
