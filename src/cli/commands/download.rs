//! `vast execution cluster download` and `download-cleanup`: upstream's checks and messages,
//! the choice of runs (finished ones only, from the run records and the cluster), then the
//! `download` (or `remote-compress`, `download-cleanup`) workflow. `--port-forward-only` is
//! not a workflow: it forwards the pod's HTTP port until Ctrl-C.

use crate::cli::output;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;

use super::cluster_common::{context_param, resources, Target};
use super::results_common::{choose, connect, list_runs, Access, Wording};
use crate::cli::args::{DownloadArgs, DownloadCleanupArgs};
use crate::cli::execute::{start_operation_as, step_output};
use crate::cli::{ExitStatus, Globals, UsageError};
use crate::cluster::portforward::PortForward;
use crate::engine::RunId;
use crate::ops::results::{Availability, PlanItem};
use crate::store::StateDir;

fn output_dir(args: &DownloadArgs, t: &Target) -> anyhow::Result<PathBuf> {
    let dir = match (&args.output, &t.project) {
        (Some(o), _) => o.clone(),
        (None, Some(p)) => p.results_dir.clone(),
        (None, None) => {
            return Err(UsageError(
                "--output parameter is required (or use 'vast init' to set default)\nUse --help for usage information".into(),
            )
            .into())
        }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| UsageError(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir.canonicalize()?)
}

fn non_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

pub async fn run(args: DownloadArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    if args.port_forward_only && args.remote_compress_only {
        output::error(
            "Error: --port-forward-only and --remote-compress-only are mutually exclusive",
        );
        return Ok(ExitStatus::Failure);
    }
    let a = match connect(globals, args.context.clone()).await? {
        Ok(a) => a,
        Err(status) => return Ok(status),
    };
    if args.port_forward_only {
        return port_forward_only(&a).await;
    }
    let out = if args.remote_compress_only {
        None
    } else {
        Some(output_dir(&args, &a.target)?)
    };
    let runs = match list_runs(&a).await {
        Ok(r) => r,
        Err(e) => {
            output::error(format!("Unexpected error listing runs: {e}"));
            return Ok(ExitStatus::Failure);
        }
    };
    let wording = if args.remote_compress_only {
        Wording {
            not_ready: "not ready",
            none_ready: "No runs ready. Wait for jobs to finish and try again.",
            none_found: "No runs found.",
        }
    } else {
        Wording {
            not_ready: "not downloadable",
            none_ready: "No runs ready to download. Wait for jobs to finish and try again.",
            none_found: "No runs found to download.",
        }
    };
    let mut chosen = match choose(runs, args.run_id.as_deref(), &wording) {
        Ok(c) => c,
        Err(status) => return Ok(status),
    };
    let direct = args.direct || !a.has_http || !a.has_archiver;
    if direct && args.remote_compress_only {
        output::error(
            "Error: the robovast pod has no archiver container; --remote-compress-only needs one",
        );
        return Ok(ExitStatus::Failure);
    }
    let mut skipped = 0;
    if let Some(out) = &out {
        // Something that is not a directory where a run's directory goes is the user's: it
        // is never moved or replaced (not even with --force), and no run is started for it.
        let blocked: Vec<PathBuf> = chosen
            .iter()
            .map(|p| out.join(&p.run))
            .filter(|d| d.symlink_metadata().is_ok_and(|m| !m.is_dir()))
            .collect();
        if !blocked.is_empty() {
            for b in &blocked {
                output::error(format!(
                    "Error: {} exists and is not a directory; vast never moves or replaces it: move it away (or choose another --output) and download again",
                    b.display()
                ));
            }
            return Ok(ExitStatus::Failure);
        }
        if !args.force {
            chosen.retain(|p| {
                let exists = non_empty_dir(&out.join(&p.run));
                if exists {
                    output::status(format!("{}  skipped (already exists)", p.run));
                    skipped += 1;
                }
                !exists
            });
        }
        if chosen.is_empty() {
            output::result(format!(
                "✓ Download of {} completed successfully!",
                output::plural(skipped as u64, "run")
            ));
            return Ok(ExitStatus::Success);
        }
        output::status(format!(
            "Downloading the results of {} to directory '{}'...",
            output::plural(chosen.len() as u64, "run"),
            out.display()
        ));
        if direct && !args.direct {
            tracing::info!("The robovast pod has no HTTP server or archiver: downloading objects directly from S3.");
        }
    } else {
        output::status(format!(
            "Compressing {} on remote pod...",
            output::plural(chosen.len() as u64, "run")
        ));
    }
    let operation = if args.remote_compress_only {
        "remote-compress"
    } else {
        "download"
    };
    let params = json!({
        "context": context_param(&args.context),
        "namespace": a.namespace,
        "state_dir": a.state_dir.display().to_string(),
        "output": out.as_ref().map(|o| o.display().to_string()),
        "runs": chosen,
        "force_archive": args.force,
        "skip_removal": args.skip_removal,
        "keep_remote_archive": args.skip_removal || direct,
        "no_keep_archive": args.no_keep_archive,
        "direct": direct,
        "verbose": globals.verbosity > 0,
        "quiet": globals.verbosity < 0,
        "remove_after": "extract",
        "report_from": if args.remote_compress_only { "archive" } else { "remove" },
        "summary": if args.remote_compress_only { "compress" } else { "download" },
        "skipped_before": skipped,
    });
    let res = resources(operation, &params).await?;
    let id = RunId::generate(operation);
    let dir = StateDir::new(&a.state_dir);
    // The summary is printed by the run's `report` step (so a resume prints it too).
    start_operation_as(&dir, &id, operation, &params, res).await
}

/// Forwards the pod's HTTP port and lists the archives until Ctrl-C (exit 0 then).
async fn port_forward_only(a: &Access) -> anyhow::Result<ExitStatus> {
    if !a.has_http {
        output::error("Error: the robovast pod has no HTTP server (port 80)");
        return Ok(ExitStatus::Failure);
    }
    let pods: Api<Pod> = Api::namespaced(a.kube.clone(), &a.namespace);
    let forward = PortForward::start(pods.clone(), "robovast", 80).await?;
    let base = forward.http_endpoint();
    let archives = crate::pod::PodScripts::new(pods, "robovast")
        .list_archives()
        .await
        .unwrap_or_default();
    output::result(format!("Port-forward active — {base}"));
    if archives.is_empty() {
        output::result("No .tar.gz archives found on the pod yet.");
    } else {
        output::result(format!("Downloadable archives ({}):", archives.len()));
        for n in &archives {
            output::result(format!("  {base}/{n}"));
        }
        output::status("");
        output::result(format!("Example:  curl -O {base}/{}", archives[0]));
    }
    output::result("Press Ctrl+C to stop the port-forward.");
    let _ = tokio::signal::ctrl_c().await;
    // stdout may be gone by now (a pipe whose reader quit): never panic on it.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), b"Cleaning up...\n");
    drop(forward);
    Ok(ExitStatus::Success)
}

pub async fn cleanup(args: DownloadCleanupArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let a = match connect(globals, args.context.clone()).await? {
        Ok(a) => a,
        Err(status) => return Ok(status),
    };
    let runs = match list_runs(&a).await {
        Ok(r) => r,
        Err(e) => {
            output::error(format!("Error: listing runs: {e}"));
            return Ok(ExitStatus::Failure);
        }
    };
    let runs: Vec<(String, Availability)> = match &args.run_id {
        Some(r) => {
            let found: Vec<_> = runs.into_iter().filter(|(b, _)| b == r).collect();
            if found.is_empty() {
                output::result(format!("No bucket matching '{r}' found."));
                output::result("✓ Removed 0 buckets from S3.");
                return Ok(ExitStatus::Success);
            }
            found
        }
        None => runs,
    };
    if runs.is_empty() {
        output::result("No run buckets found to remove.");
        output::result("✓ Removed 0 buckets from S3.");
        return Ok(ExitStatus::Success);
    }
    let mut chosen = Vec::new();
    let mut refused = 0;
    for (b, av) in runs {
        match av {
            Availability::NotReady {
                running, pending, ..
            } if (running > 0 || pending > 0) && !args.force => {
                output::error(format!(
                    "Refusing to remove '{b}': its run is still active (jobs running: {running}, pending: {pending}); use --force to remove it anyway"
                ));
                refused += 1;
            }
            _ => chosen.push(PlanItem {
                run: b.clone(),
                bucket: b,
            }),
        }
    }
    let mut removed = 0;
    let mut status = ExitStatus::Success;
    if !chosen.is_empty() {
        let params = json!({
            "context": context_param(&args.context),
            "namespace": a.namespace,
            "state_dir": a.state_dir.display().to_string(),
            "runs": chosen,
        });
        let res = resources("download-cleanup", &params).await?;
        let id = RunId::generate("download-cleanup");
        let dir = StateDir::new(&a.state_dir);
        status = start_operation_as(&dir, &id, "download-cleanup", &params, res).await?;
        removed = step_output(&dir, id.as_str(), "remove")
            .and_then(|v| v.as_array().map(|a| a.len()))
            .unwrap_or(0);
    }
    if refused > 0 {
        // Not a success: say so instead of a check mark.
        output::result(format!(
            "✗ Removed {} from S3; refused {} still active (--force removes them).",
            output::plural(removed as u64, "bucket"),
            output::plural(refused as u64, "run")
        ));
        return Ok(match status {
            ExitStatus::Success => ExitStatus::Failure,
            other => other,
        });
    }
    output::result(format!(
        "✓ Removed {} from S3.",
        output::plural(removed as u64, "bucket")
    ));
    Ok(status)
}
