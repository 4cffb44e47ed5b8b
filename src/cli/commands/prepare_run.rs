//! `vast execution cluster prepare-run OUTPUT`: everything of a run written to OUTPUT for manual
//! deployment. Only the Kueue quota needs the cluster; without one the defaults are used.
use crate::cli::output;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::cli::{args::PrepareRunArgs, ExitStatus, Globals, UsageError};
use crate::engine::RunId;
use crate::manifests::cluster_config::{cluster_config, parse_option, validate_namespace};
use crate::manifests::kueue::{compute_quota, QuotaOutcome};
use crate::manifests::prepare::{prepare_run, PrepareError, PrepareInput};
use crate::project::files::read_setup;
use crate::project::resources::{active_kube_context, require_context_for_multi_cluster};

use super::configuration::{check_resources, load_configs, load_vast, select_config};

const QUOTA_TIMEOUT: Duration = Duration::from_secs(15);

/// The quota from the cluster of `context`, or the defaults (with the reason) on any failure.
pub async fn query_quota(context: Option<&str>) -> QuotaOutcome {
    let query = async {
        use k8s_openapi::api::core::v1::{Node, Pod};
        use kube::api::{Api, ListParams};
        let opts = kube::config::KubeConfigOptions {
            context: context.map(String::from),
            ..Default::default()
        };
        let cfg = kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| e.to_string())?;
        let client = kube::Client::try_from(cfg).map_err(|e| e.to_string())?;
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let pods = Api::<Pod>::all(client)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(compute_quota(&nodes.items, &pods.items))
    };
    match tokio::time::timeout(QUOTA_TIMEOUT, query).await {
        Ok(Ok(q)) => q,
        Ok(Err(e)) => QuotaOutcome::query_failed(&e),
        Err(_) => {
            QuotaOutcome::query_failed(&format!("no answer within {} s", QUOTA_TIMEOUT.as_secs()))
        }
    }
}

pub async fn run(args: PrepareRunArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let (vast, project) = load_vast(globals)?;
    require_context_for_multi_cluster(args.context.as_deref(), Some(&vast.path))
        .map_err(|e| UsageError(e.to_string()))?;
    let mut options = BTreeMap::new();
    for o in &args.options {
        let (k, v) = parse_option(o).map_err(|e| UsageError(e.to_string()))?;
        options.insert(k, v);
    }
    // The saved setup is keyed by the resolved context (explicit, else the active one).
    let resolved = args.context.clone().or_else(active_kube_context);
    let saved = match &project {
        Some(p) => read_setup(&p.dir, resolved.as_deref(), args.context.is_some())
            .map_err(|e| UsageError(e.to_string()))?,
        None => None,
    };
    let cluster_name = match (&args.cluster_config, &saved) {
        (Some(k), _) => k.clone(),
        (None, Some(s)) => s.name.clone(),
        (None, None) => {
            return Err(UsageError(
                "No cluster config specified and no saved config found. Use --cluster-config <name> to select a config, or run setup first.".into(),
            )
            .into())
        }
    };
    let cluster = cluster_config(&cluster_name)
        .map_err(|e| UsageError(format!("Failed to get cluster config: {e}")))?;
    // Saved options apply when the saved config is used; -o overrides them.
    let mut merged = BTreeMap::new();
    if let Some(s) = saved.as_ref().filter(|s| s.name == cluster.name) {
        merged.extend(s.kwargs.clone());
    }
    merged.extend(options);
    let namespace = merged
        .get("namespace")
        .cloned()
        .unwrap_or_else(|| "default".to_string());
    merged.remove("namespace");
    validate_namespace(&namespace).map_err(|e| UsageError(e.to_string()))?;
    cluster
        .resolve_options(&merged)
        .map_err(|e| UsageError(e.to_string()))?;

    let mut configs = load_configs(&vast)?;
    select_config(&mut configs, args.config.as_deref())?;
    let runs = args.runs.unwrap_or(vast.execution.runs);
    if runs == 0 {
        return Err(UsageError("--runs must be at least 1".into()).into());
    }
    // Resource resolution fails the same way for every Job: check it before the (possibly
    // slow) cluster query, so input errors come at once.
    check_resources(&vast, args.context.as_deref())?;
    let run_id = RunId::generate("run");
    let quota = query_quota(args.context.as_deref()).await;
    if quota.defaulted {
        tracing::warn!("{}", quota.message);
    } else {
        tracing::info!("{}", quota.message);
    }
    output::status(format!(
        "Preparing run configuration 'ID: {}', test configs: {}, runs per test config: {runs}...",
        run_id.as_str(),
        configs.len()
    ));
    let input = PrepareInput {
        vast: &vast,
        configs: &configs,
        runs,
        cluster,
        options: merged,
        namespace,
        context: args.context.clone(),
        log_tree: args.log_tree,
        run_id: run_id.as_str().to_string(),
        quota: quota.quota,
        created_at: jiff::Timestamp::now().to_string(),
    };
    let prepared = prepare_run(&args.output, &input).map_err(|e| match e {
        // Local I/O failures are not the user's input: exit 1.
        PrepareError::Io { .. } => anyhow::Error::new(e),
        other => UsageError(other.to_string()).into(),
    })?;
    output::result(format!(
        "✓ Successfully prepared {} job manifests in directory '{}'.",
        prepared.jobs,
        args.output.display()
    ));
    output::status("");
    output::result("Follow README files to set up and execute.");
    if args.json {
        output::print_json(&serde_json::json!({
            "run_id": run_id.as_str(),
            "jobs": prepared.jobs,
            "directory": args.output.display().to_string(),
        }))?;
    }
    Ok(ExitStatus::Success)
}
