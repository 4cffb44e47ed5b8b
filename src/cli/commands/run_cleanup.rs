//! `vast execution cluster run-cleanup [--run-id R] [-x CTX]`: upstream's checks and messages,
//! then the `run-cleanup` workflow (which never drains the shared ClusterQueue).

use crate::cli::output;
use serde_json::json;

use super::cluster_common::{access, context_param, resources, target};
use crate::cli::execute::start_operation;
use crate::cli::{args::RunCleanupArgs, ExitStatus, Globals};
use crate::manifests::job::label_safe;

pub async fn run(args: RunCleanupArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let t = target(globals, args.context.clone(), false)?;
    let namespace = t.namespace();
    output::status("Checking Kubernetes cluster access...");
    let kube = match access(args.context.as_deref(), &namespace).await {
        Ok((kube, line)) => {
            tracing::info!("{line}");
            kube
        }
        Err(m) => {
            output::error(format!("✗ Error: {m}"));
            return Ok(ExitStatus::Failure);
        }
    };
    if let Some(r) = &args.run_id {
        let ids =
            super::cluster_common::preflight(|| crate::cluster::runs::run_ids(&kube, &namespace))
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "listing the runs' Jobs: {}",
                        crate::cluster::error::message(&e)
                    )
                })?;
        if !ids.contains(&label_safe(r)) {
            output::error(format!("Run '{r}' not found in cluster."));
            if ids.is_empty() {
                output::error("No scenario run jobs in cluster.");
            } else {
                output::error("Available run-ids:");
                for id in &ids {
                    output::error(format!("  - {id}"));
                }
            }
            return Ok(ExitStatus::Failure);
        }
        output::status(format!("Cleaning up jobs and pods for run '{r}'..."));
    } else {
        output::status("Cleaning up all scenario run jobs and pods...");
    }
    let params = json!({
        "context": context_param(&args.context),
        "namespace": namespace,
        "run_id": args.run_id,
    });
    let res = resources("run-cleanup", &params).await?;
    let status = start_operation(globals, "run-cleanup", &params, res).await?;
    if status == ExitStatus::Success {
        output::result("✓ Cleanup completed successfully!");
    }
    Ok(status)
}
