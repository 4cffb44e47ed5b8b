//! `vast execution cluster run [-c CONFIG] [-r RUNS] [--follow] [--cleanup] [-t] [-x CTX]`:
//! upstream's pre-flight checks and messages (cluster access, robovast pod, saved setup), the
//! input checked before anything is created, then the `run` workflow under a fresh run id
//! (which names the bucket and labels the Jobs).

use serde_json::json;

use super::cluster_common::{access, check_pod, context_param, resources, target};
use super::configuration::{check_resources, load_configs, load_vast, select_config};
use crate::cli::execute::start_operation_as;
use crate::cli::{args::RunArgs, ExitStatus, Globals, UsageError};
use crate::engine::RunId;
use crate::store::StateDir;

fn setup_hint(message: &str) -> ExitStatus {
    eprintln!("✗ Error: {message}");
    eprintln!("To set up the cluster.");
    println!();
    eprintln!("  vast execution cluster setup <cluster-config>");
    println!();
    ExitStatus::Failure
}

pub async fn run(args: RunArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let t = target(globals, args.context.clone(), true)?;
    let namespace = t.namespace();
    if let Some(r) = args.runs {
        if r < 1 {
            return Err(UsageError(format!("--runs must be at least 1 (got {r})")).into());
        }
    }
    // The input first: nothing touches the cluster before it is known to be good.
    let (vast, _) = load_vast(globals)?;
    select_config(&mut load_configs(&vast)?, args.config.as_deref())?;
    check_resources(&vast, args.context.as_deref())?;

    println!("Checking Kubernetes cluster access...");
    let kube = match access(args.context.as_deref(), &namespace).await {
        Ok((kube, line)) => {
            tracing::info!("{line}");
            kube
        }
        Err(m) => {
            eprintln!("✗ Error: {m}");
            eprintln!("  Kubernetes cluster is required for RoboVAST execution.");
            return Ok(ExitStatus::Failure);
        }
    };
    println!("Checking robovast pod status...");
    if let Err(m) = check_pod(&kube, &namespace).await {
        return Ok(setup_hint(&m));
    }
    let Some(setup) = &t.setup else {
        return Ok(setup_hint(
            "Failed to get cluster config: No cluster config specified and no saved config found. Run setup first.",
        ));
    };

    let state_dir = globals.state_dir();
    std::fs::create_dir_all(&state_dir)?;
    let state_dir = state_dir.canonicalize()?;
    let id = RunId::generate("run");
    let params = json!({
        "context": context_param(&args.context),
        "namespace": namespace,
        "state_dir": state_dir.display().to_string(),
        "vast_file": vast.path.canonicalize().unwrap_or(vast.path.clone()).display().to_string(),
        "vast_sha256": crate::ops::run::vast_sha256(&vast.text),
        "config": args.config,
        "runs": args.runs,
        "log_tree": args.log_tree,
        "follow": args.follow,
        "cleanup": args.cleanup,
        "cluster_config": setup.name,
        "spot": setup.kwargs.get("spot").is_some_and(|v| v == "true"),
        "created_at": jiff::Timestamp::now().to_string(),
    });
    let res = resources("run", &params).await?;
    let status = start_operation_as(&StateDir::new(state_dir), &id, "run", &params, res).await?;
    if status != ExitStatus::Success {
        return Ok(status);
    }
    if args.follow {
        println!("Cluster execution finished.");
        println!();
        println!("You can now download the results using:");
        println!();
        println!("  vast execution cluster download");
        println!();
    } else {
        tracing::info!("Running in detached mode. Jobs will continue running in the background.");
        println!("✓ Jobs created successfully (Run ID: {})", id.as_str());
        println!();
        println!("Jobs are now running in detached mode.");
        println!();
        println!("To check job status, use: vast execution cluster monitor");
        println!("To clean up jobs, use: vast execution cluster run-cleanup");
        println!();
    }
    Ok(status)
}
