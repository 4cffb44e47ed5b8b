//! `vast execution cluster run [-c CONFIG] [-r RUNS] [--follow] [--cleanup] [-t] [-x CTX]`:
//! upstream's pre-flight checks and messages (cluster access, robovast pod, saved setup), the
//! input checked before anything is created, then the `run` workflow under a fresh run id
//! (which names the bucket and labels the Jobs).

use crate::cli::output;
use serde_json::json;

use super::cluster_common::{access, check_pod, context_param, resources, target};
use super::configuration::{check_resources, load_configs, load_vast, select_config};
use crate::cli::execute::start_operation_as;
use crate::cli::{args::RunArgs, ExitStatus, Globals, UsageError};
use crate::engine::RunId;
use crate::store::StateDir;

/// `--download`'s directory: `--output`, else the project's results directory; created now.
fn campaign_output(
    output: Option<&std::path::Path>,
    t: &super::cluster_common::Target,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = match (output, &t.project) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(p)) => p.results_dir.clone(),
        (None, None) => {
            return Err(UsageError(
                "--download needs --output DIR (or use 'vast init' to set a results directory)"
                    .into(),
            )
            .into())
        }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| UsageError(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir.canonicalize()?)
}

fn setup_hint(message: &str) -> ExitStatus {
    output::error(format!("✗ Error: {message}"));
    output::error("To set up the cluster.");
    output::status("");
    output::error("  vast execution cluster setup <cluster-config>");
    output::status("");
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
    crate::project::template::collect_test_files(&vast).map_err(|e| UsageError(e.to_string()))?;
    let notify = crate::notify::url_from(args.notify.as_deref()).map_err(UsageError)?;
    if notify.is_none() && args.notify_every.is_some() {
        return Err(
            UsageError("--notify-every needs --notify URL (or VAST_NOTIFY_URL)".into()).into(),
        );
    }
    // A campaign's destination is checked before anything is created too.
    let output = if args.download {
        Some(campaign_output(args.output.as_deref(), &t)?)
    } else {
        None
    };
    let share = if args.upload_to_share {
        Some(super::results_common::share_selection()?)
    } else {
        None
    };

    output::status("Checking Kubernetes cluster access...");
    let kube = match access(args.context.as_deref(), &namespace).await {
        Ok((kube, line)) => {
            tracing::info!("{line}");
            kube
        }
        Err(m) => {
            output::error(format!("✗ Error: {m}"));
            output::error("  Kubernetes cluster is required for RoboVAST execution.");
            return Ok(ExitStatus::Failure);
        }
    };
    output::status("Checking robovast pod status...");
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
    let mut params = params;
    params["verbose"] = json!(globals.verbosity > 0);
    params["quiet"] = json!(globals.verbosity < 0);
    params["notify_every_s"] = json!(args.notify_every.map(|d| d.as_secs()));
    params["stall_timeout_s"] = json!(args
        .stall_timeout
        .map(|d| d.as_secs())
        .unwrap_or(if args.follow { 30 * 60 } else { 0 }));
    let operation = if let Some(out) = &output {
        params["campaign"] = json!(true);
        params["output"] = json!(out.display().to_string());
        params["remove_after"] = json!("extract");
        params["report_from"] = json!("remove");
        params["summary"] = json!("download");
        "campaign"
    } else if let Some(sh) = &share {
        params["campaign"] = json!(true);
        params["project_dir"] = json!(sh.project_dir.as_ref().map(|p| p.display().to_string()));
        params["vast_dir"] = json!(sh.vast_dir.as_ref().map(|p| p.display().to_string()));
        params["share_type"] = json!(sh.share_type);
        params["share_display"] = json!(sh.selected.provider.display_name());
        params["script"] = json!(sh.selected.provider.script_key());
        params["plugin_scripts"] = json!(sh.plugin_scripts);
        params["remove_after"] = json!("upload");
        params["report_from"] = json!("remove");
        "campaign-share"
    } else {
        "run"
    };
    let mut res = resources(operation, &params).await?;
    if let Some(sh) = share {
        res.insert(crate::ops::share::ShareEnv(sh.selected));
    }
    if notify.is_some() {
        res.insert(crate::ops::run::Notifier(notify.clone()));
    }
    let status =
        start_operation_as(&StateDir::new(state_dir), &id, operation, &params, res).await?;
    if operation != "run" {
        return Ok(status);
    }
    if status != ExitStatus::Success {
        return Ok(status);
    }
    if args.follow {
        output::result("Cluster execution finished.");
        output::status("");
        output::result("You can now download the results using:");
        output::status("");
        output::result("  vast execution cluster download");
        output::status("");
    } else {
        tracing::info!("Running in detached mode. Jobs will continue running in the background.");
        output::result(format!(
            "✓ Jobs created successfully (Run ID: {})",
            id.as_str()
        ));
        output::status("");
        output::result("Jobs are now running in detached mode.");
        output::status("");
        output::result("To check job status, use: vast execution cluster monitor");
        output::result("To clean up jobs, use: vast execution cluster run-cleanup");
        output::status("");
    }
    Ok(status)
}
