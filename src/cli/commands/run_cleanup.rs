//! `vast execution cluster run-cleanup [--run-id R] [-x CTX]`: upstream's checks and messages,
//! then the `run-cleanup` workflow (which never drains the shared ClusterQueue).

use serde_json::json;

use super::cluster_common::{access, context_param, resources, target};
use crate::cli::execute::start_operation;
use crate::cli::{args::RunCleanupArgs, ExitStatus, Globals};
use crate::manifests::job::label_safe;

pub async fn run(args: RunCleanupArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let t = target(globals, args.context.clone(), false)?;
    let namespace = t.namespace();
    println!("Checking Kubernetes cluster access...");
    let kube = match access(args.context.as_deref(), &namespace).await {
        Ok((kube, line)) => {
            tracing::info!("{line}");
            kube
        }
        Err(m) => {
            eprintln!("✗ Error: {m}");
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
            eprintln!("Run '{r}' not found in cluster.");
            if ids.is_empty() {
                eprintln!("No scenario run jobs in cluster.");
            } else {
                eprintln!("Available run-ids:");
                for id in &ids {
                    eprintln!("  - {id}");
                }
            }
            return Ok(ExitStatus::Failure);
        }
        println!("Cleaning up jobs and pods for run '{r}'...");
    } else {
        println!("Cleaning up all scenario run jobs and pods...");
    }
    let params = json!({
        "context": context_param(&args.context),
        "namespace": namespace,
        "run_id": args.run_id,
    });
    let res = resources("run-cleanup", &params).await?;
    let status = start_operation(globals, "run-cleanup", &params, res).await?;
    if status == ExitStatus::Success {
        println!("✓ Cleanup completed successfully!");
    }
    Ok(status)
}
