//! `vast execution cluster cleanup [-c CONFIG] [-n NS] [-o k=v]... [-x CTX] [-y]`: resolves
//! the cluster config (saved setup, or `--cluster-config` with only the CLI options), checks
//! the cluster, asks on a terminal before removing results that were never downloaded
//! (`--yes` skips; without a terminal it proceeds and lists them), and runs the `cleanup`
//! workflow.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

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
    let kube = match super::cluster_common::access(args.context.as_deref(), &namespace).await {
        Ok((kube, _)) => kube,
        Err(m) => {
            output::error(format!("✗ Error: {m}"));
            output::error("  Kubernetes cluster is required for RoboVAST execution.");
            return Ok(ExitStatus::Failure);
        }
    };
    let state_dir = globals.state_dir();
    let undownloaded = match run_buckets(&kube, &namespace).await {
        // The state directory's download runs are read only when there is something to lose.
        Ok(buckets) if buckets.is_empty() => Vec::new(),
        Ok(buckets) => {
            let results = t.project.as_ref().map(|p| p.results_dir.as_path());
            not_downloaded(&buckets, &downloaded_buckets(&state_dir), results)
        }
        Err(m) => {
            output::warn(format!(
                "cannot list the runs' results in the cluster ({m}); cleanup removes whatever is there"
            ));
            Vec::new()
        }
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let go = confirm(
        &undownloaded,
        args.yes,
        interactive,
        &mut std::io::stdin().lock(),
        &mut std::io::stderr(),
    )?;
    if !go {
        output::error("Cleanup cancelled; nothing was removed. Download the results first: vast execution cluster download");
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
        if !undownloaded.is_empty() {
            output::result(format!(
                "Removed the results of {} that were never downloaded: {}",
                output::plural(undownloaded.len() as u64, "run"),
                undownloaded.join(", ")
            ));
        }
        output::result("✓ Cluster cleanup completed successfully!");
    }
    Ok(status)
}

/// The `run-*` buckets in the robovast pod's S3 (through a port-forward), bounded in time: a
/// cluster without a running robovast pod has none to lose.
async fn run_buckets(kube: &kube::Client, namespace: &str) -> Result<Vec<String>, String> {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::namespaced(kube.clone(), namespace);
    let running = super::cluster_common::preflight(|| pods.get_opt(crate::ops::base::ROBOVAST_POD))
        .await
        .map_err(|e| crate::cluster::error::message(&e))?
        .and_then(|p| p.status.and_then(|s| s.phase))
        .is_some_and(|phase| phase == "Running");
    if !running {
        return Ok(Vec::new());
    }
    let list = async {
        let (_forward, client) =
            crate::cluster::s3::forwarded(kube, namespace, crate::ops::base::ROBOVAST_POD)
                .await
                .map_err(|e| e.to_string())?;
        crate::cluster::s3::list_buckets(&client, "run-")
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), list)
        .await
        .map_err(|_| "no answer within 60 s".to_string())?
}

/// The buckets a `download` run of this state directory fetched: the runs of every
/// succeeded download run, without the items that failed for good.
pub fn downloaded_buckets(state_dir: &Path) -> BTreeSet<String> {
    let dir = crate::store::StateDir::new(state_dir);
    let mut out = BTreeSet::new();
    for entry in dir.list().unwrap_or_default() {
        let Ok(Some(view)) = entry.snapshot else {
            continue;
        };
        if view.operation != "download" || view.status != "succeeded" {
            continue;
        }
        let Some(state) = dir
            .open_run_for_reading(&entry.id)
            .ok()
            .and_then(|s| s.load().ok())
        else {
            continue;
        };
        let failed: BTreeSet<u64> = state.failed_items().iter().map(|f| f.index).collect();
        let params: serde_json::Value = serde_json::from_str(&view.params).unwrap_or_default();
        for (i, r) in params["runs"].as_array().into_iter().flatten().enumerate() {
            if let (false, Some(b)) = (failed.contains(&(i as u64)), r["bucket"].as_str()) {
                out.insert(b.to_string());
            }
        }
    }
    out
}

/// The buckets that were never downloaded: not fetched by a download run of this state
/// directory, and without a non-empty `<results_dir>/<run>` directory.
pub fn not_downloaded(
    buckets: &[String],
    downloaded: &BTreeSet<String>,
    results_dir: Option<&Path>,
) -> Vec<String> {
    let local = |b: &str| {
        results_dir.is_some_and(|d| {
            std::fs::read_dir(d.join(b))
                .map(|mut e| e.next().is_some())
                .unwrap_or(false)
        })
    };
    buckets
        .iter()
        .filter(|b| !downloaded.contains(*b) && !local(b))
        .cloned()
        .collect()
}

/// Whether to go on removing `undownloaded` results: yes when there are none or `yes`; without
/// a terminal (`interactive` false) yes, saying which are removed; otherwise the user's answer
/// read from `answers` to the question written to `prompt` (`y`/`yes`, anything else is no).
pub fn confirm(
    undownloaded: &[String],
    yes: bool,
    interactive: bool,
    answers: &mut dyn BufRead,
    prompt: &mut dyn Write,
) -> std::io::Result<bool> {
    if undownloaded.is_empty() || yes {
        return Ok(true);
    }
    let what = format!(
        "the results of {} that were never downloaded ({})",
        output::plural(undownloaded.len() as u64, "run"),
        undownloaded.join(", ")
    );
    if !interactive {
        output::warn(format!("Cleanup removes {what}."));
        return Ok(true);
    }
    write!(
        prompt,
        "Cleanup removes {what}.\nRemove them? (--yes skips this question) [y/N] "
    )?;
    prompt.flush()?;
    let mut line = String::new();
    answers.read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(undownloaded: &[&str], yes: bool, interactive: bool, answer: &str) -> (bool, String) {
        let runs: Vec<String> = undownloaded.iter().map(|s| s.to_string()).collect();
        let mut prompt = Vec::new();
        let go = confirm(&runs, yes, interactive, &mut answer.as_bytes(), &mut prompt).unwrap();
        (go, String::from_utf8(prompt).unwrap())
    }

    #[test]
    fn cleanup_asks_on_a_terminal_only_for_results_never_downloaded() {
        // Nothing to lose: no question.
        assert_eq!(ask(&[], false, true, ""), (true, String::new()));
        // --yes: no question.
        assert_eq!(ask(&["run-a"], true, true, ""), (true, String::new()));
        // No terminal: proceeds as upstream, without asking.
        assert_eq!(ask(&["run-a"], false, false, ""), (true, String::new()));
        // On a terminal: the question names the runs; only y/yes goes on.
        let (go, prompt) = ask(&["run-a", "run-b"], false, true, "y\n");
        assert!(go);
        assert!(
            prompt.contains("the results of 2 runs that were never downloaded (run-a, run-b)")
                && prompt.ends_with("[y/N] "),
            "{prompt}"
        );
        assert!(ask(&["run-a"], false, true, "YES\n").0);
        assert!(!ask(&["run-a"], false, true, "\n").0, "the default is no");
        assert!(!ask(&["run-a"], false, true, "n\n").0);
        assert!(!ask(&["run-a"], false, true, "").0, "end of input is no");
    }

    #[test]
    fn a_run_with_local_results_counts_as_downloaded() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("run-a/x")).unwrap();
        std::fs::create_dir_all(d.path().join("run-empty")).unwrap();
        let buckets: Vec<String> = ["run-a", "run-b", "run-c", "run-empty"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let fetched: BTreeSet<String> = ["run-b".to_string()].into();
        assert_eq!(
            not_downloaded(&buckets, &fetched, Some(d.path())),
            vec!["run-c".to_string(), "run-empty".to_string()]
        );
    }
}
