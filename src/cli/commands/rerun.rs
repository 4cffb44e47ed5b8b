//! `vast execution cluster rerun <run-id> [--lost] [--failed] [-x CTX]`: re-submits the runs of
//! a run that have no verdict (`--lost`, the default) or whose scenario failed (`--failed`)
//! into the same run (same bucket, Job names with an attempt suffix), as the resumable `rerun`
//! workflow. The target run's record keeps every attempt. Refused while another process
//! executes the target run (its `--follow` re-submits lost runs itself).

use crate::cli::output;
use serde_json::{json, Value};

use super::cluster_common::resources;
use crate::cli::execute::start_operation_as;
use crate::cli::{args::RerunArgs, ExitStatus, Globals, UsageError};
use crate::engine::RunId;
use crate::ops::runs::RunRecord;
use crate::store::StateDir;

/// The parameters a rerun takes over from the run it re-submits into.
const INHERITED: &[&str] = &[
    "context",
    "namespace",
    "vast_file",
    "vast_sha256",
    "config",
    "runs",
    "log_tree",
    "cluster_config",
    "created_at",
    "spot",
];

pub async fn run(args: RerunArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let state_dir = globals.state_dir();
    let dir = StateDir::new(&state_dir);
    let id = args.run_id.clone();
    RunId::parse(&id).map_err(|e| UsageError(e.to_string()))?;
    if !dir.exists(&id) {
        return Err(UsageError(format!(
            "unknown run '{id}' (no {})",
            dir.run_dir(&id).display()
        ))
        .into());
    }
    let view = dir
        .snapshot(&id)
        .map_err(|e| UsageError(e.to_string()))?
        .ok_or_else(|| UsageError(format!("run '{id}' is being created; try again")))?;
    if !matches!(
        view.operation.as_str(),
        "run" | "campaign" | "campaign-share"
    ) {
        return Err(UsageError(format!(
            "run '{id}' is a '{}' run; rerun takes a run of `vast execution cluster run`",
            view.operation
        ))
        .into());
    }
    if let Some(h) = dir.holder(&id).map_err(|e| UsageError(e.to_string()))? {
        return Err(UsageError(format!(
            "run '{id}' is being executed by process {} (its --follow re-submits lost runs itself); wait for it or stop it first",
            h.pid
        ))
        .into());
    }
    match RunRecord::load(&state_dir, &id) {
        Ok(Some(r)) if !r.jobs.is_empty() => {}
        Ok(_) => {
            return Err(UsageError(format!(
                "run '{id}' has not planned its Jobs yet; resume it with `vast resume {id}`"
            ))
            .into())
        }
        Err(e) => return Err(UsageError(e).into()),
    }
    let old: Value = serde_json::from_str(&view.params)
        .map_err(|e| UsageError(format!("run '{id}': unreadable parameters: {e}")))?;
    let mut params = json!({});
    for k in INHERITED {
        if let Some(v) = old.get(*k) {
            params[*k] = v.clone();
        }
    }
    if let Some(c) = &args.context {
        params["context"] = json!(c);
    }
    let state_dir = std::fs::canonicalize(&state_dir)?;
    params["state_dir"] = json!(state_dir.display().to_string());
    params["target"] = json!(id);
    params["lost"] = json!(args.lost || !args.failed);
    params["failed"] = json!(args.failed);
    // The target run's cluster must answer before a rerun run is created (an unreachable
    // cluster or unknown context is no run to resume).
    let context = params["context"].as_str().map(String::from);
    let namespace = params["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    if let Err(m) = super::cluster_common::access(context.as_deref(), &namespace).await {
        output::error(format!("✗ Error: {m}"));
        return Ok(ExitStatus::Failure);
    }
    let res = resources("rerun", &params).await?;
    let rid = RunId::generate("rerun");
    let status =
        start_operation_as(&StateDir::new(&state_dir), &rid, "rerun", &params, res).await?;
    if status == ExitStatus::Success {
        let n =
            crate::cli::execute::step_output(&StateDir::new(&state_dir), rid.as_str(), "select")
                .and_then(|v| v.as_array().map(|a| a.len()))
                .unwrap_or(0);
        if n == 0 {
            output::result(format!("Nothing to re-submit in run {id}."));
        } else {
            output::result(format!(
                "✓ Re-submitted {} into run {id}.",
                output::plural(n as u64, "run")
            ));
            output::result(format!(
                "To wait for them, use: vast execution cluster wait --run-id {id}"
            ));
        }
    }
    Ok(status)
}
