//! `vast execution cluster setup [CLUSTER_CONFIG] [--list] [-n NS] [-o k=v]... [--force] [-x CTX]`:
//! checks the input and the saved setup, then runs the `setup` workflow.

use crate::cli::output;
use serde_json::json;

use super::cluster_common::{context_param, parse_options, resources};
use crate::cli::execute::start_operation;
use crate::cli::{args::SetupArgs, ExitStatus, Globals, UsageError};
use crate::manifests::cluster_config::{cluster_config, list_text, validate_namespace};

pub async fn run(args: SetupArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    if args.list {
        print!("{}", list_text());
        return Ok(ExitStatus::Success);
    }
    let Some(name) = args.cluster_config.clone() else {
        return Err(
            UsageError("CLUSTER_CONFIG argument is required when not using --list".into()).into(),
        );
    };
    let options = parse_options(&args.options)?;
    let mut namespace = args.namespace.clone();
    if let Some(ns) = options.get("namespace") {
        namespace = ns.clone();
    }
    validate_namespace(&namespace).map_err(|e| UsageError(e.to_string()))?;
    let cluster = cluster_config(&name).map_err(|e| UsageError(e.to_string()))?;
    let mut options = options;
    options.remove("namespace");
    cluster
        .resolve_options(&options)
        .map_err(|e| UsageError(e.to_string()))?;
    let t = super::cluster_common::setup_target(globals, args.context.clone())?;
    if let (Some(saved), false) = (&t.setup, args.force) {
        let ctx = args
            .context
            .as_ref()
            .map(|c| format!(" for context '{c}'"))
            .unwrap_or_default();
        output::error(format!(
            "Error: Cluster is already set up with '{}' config{ctx}.\nRun 'vast execution cluster cleanup' first to clean up the existing setup.",
            saved.name
        ));
        return Ok(ExitStatus::Failure);
    }
    // A cluster that cannot be reached is a configuration problem, not a run to resume: an
    // unknown context or unreadable kubeconfig is a usage error (2), an unreachable server 1.
    super::cluster_common::connect(args.context.as_deref())
        .await
        .map_err(UsageError)?;
    match super::cluster_common::access(args.context.as_deref(), &namespace).await {
        Ok((_, line)) => tracing::info!("{line}"),
        Err(m) => {
            output::error(format!("✗ Error: {m}"));
            output::error("  Kubernetes cluster is required for RoboVAST execution.");
            return Ok(ExitStatus::Failure);
        }
    }
    let params = json!({
        "context": context_param(&args.context),
        "namespace": namespace,
        "cluster_config": cluster.name,
        "options": options,
        "force": args.force,
        "project_dir": t.project_dir().map(|p| p.display().to_string()),
        "setup_key": t.setup_key,
    });
    let res = resources("setup", &params).await?;
    let status = start_operation(globals, "setup", &params, res).await?;
    if status == ExitStatus::Success {
        output::result("✓ Cluster setup completed successfully!");
    }
    Ok(status)
}
