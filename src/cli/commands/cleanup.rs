//! `vast execution cluster cleanup [-c CONFIG] [-n NS] [-o k=v]... [-x CTX]`: resolves the
//! cluster config (saved setup, or `--cluster-config` with only the CLI options) and runs the
//! `cleanup` workflow.

use crate::cli::output;
use serde_json::json;

use super::cluster_common::{context_param, parse_options, resources, target};
use crate::cli::execute::start_operation;
use crate::cli::{args::CleanupArgs, ExitStatus, Globals, UsageError};
use crate::manifests::cluster_config::{cluster_config, validate_namespace};

pub async fn run(args: CleanupArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let cli_options = parse_options(&args.options)?;
    let t = target(globals, args.context.clone(), false)?;
    let (name, mut options) = match (&args.cluster_config, &t.setup) {
        (Some(c), _) => (c.clone(), cli_options.clone()),
        (None, Some(s)) => {
            let mut o = s.kwargs.clone();
            o.extend(cli_options.clone());
            (s.name.clone(), o)
        }
        (None, None) => {
            let ctx = args
                .context
                .as_ref()
                .map(|c| format!(" for context '{c}'"))
                .unwrap_or_default();
            return Err(UsageError(format!(
                "No cluster config specified and no saved config found{ctx}. Use --cluster-config <name> to select a config, or run setup first.\nhint: vast execution cluster setup <cluster-config>"
            ))
            .into());
        }
    };
    let cluster = cluster_config(&name).map_err(|e| UsageError(e.to_string()))?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| options.get("namespace").cloned())
        .unwrap_or_else(|| "default".into());
    options.remove("namespace");
    validate_namespace(&namespace).map_err(|e| UsageError(e.to_string()))?;
    cluster
        .resolve_options(&options)
        .map_err(|e| UsageError(e.to_string()))?;
    // An unreachable cluster or unknown context is a configuration problem, not a run to
    // resume: checked before the run is created.
    if let Err(m) = super::cluster_common::access(args.context.as_deref(), &namespace).await {
        output::error(format!("✗ Error: {m}"));
        output::error("  Kubernetes cluster is required for RoboVAST execution.");
        return Ok(ExitStatus::Failure);
    }
    let params = json!({
        "context": context_param(&args.context),
        "namespace": namespace,
        "cluster_config": cluster.name,
        "options": options,
        "project_dir": t.project_dir().map(|p| p.display().to_string()),
        "setup_key": t.setup_key,
    });
    let res = resources("cleanup", &params).await?;
    let status = start_operation(globals, "cleanup", &params, res).await?;
    if status == ExitStatus::Success {
        output::result("✓ Cluster cleanup completed successfully!");
    }
    Ok(status)
}
