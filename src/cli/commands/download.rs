//! `vast execution cluster download` and `download-cleanup`: upstream's checks and messages,
//! the choice of runs (finished ones only, from the run records and the cluster), then the
//! `download` (or `remote-compress`, `download-cleanup`) workflow. `--port-forward-only` is
//! not a workflow: it forwards the pod's HTTP port until Ctrl-C.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;

use super::cluster_common::{access, context_param, resources, target, Target};
use crate::cli::args::{DownloadArgs, DownloadCleanupArgs};
use crate::cli::execute::{start_operation_as, step_output};
use crate::cli::{ExitStatus, Globals, UsageError};
use crate::cluster::portforward::PortForward;
use crate::engine::RunId;
use crate::ops::results::{available_runs, Availability, PlanItem};
use crate::store::StateDir;

/// The cluster side of a results command, checked.
pub struct Access {
    pub target: Target,
    pub kube: kube::Client,
    pub namespace: String,
    pub state_dir: PathBuf,
    /// The robovast pod serves HTTP (port 80): archives can be downloaded through it.
    pub has_http: bool,
    pub has_archiver: bool,
}

/// Access check and pod check, with upstream's messages (`Err(status)`: printed, exit with it).
pub async fn connect(
    globals: &Globals,
    context: Option<String>,
) -> anyhow::Result<Result<Access, ExitStatus>> {
    let t = target(globals, context.clone(), false)?;
    let namespace = t.namespace();
    let kube = match access(context.as_deref(), &namespace).await {
        Ok((kube, line)) => {
            tracing::info!("{line}");
            kube
        }
        Err(m) => {
            eprintln!("✗ Error: {m}");
            return Ok(Err(ExitStatus::Failure));
        }
    };
    let pods: Api<Pod> = Api::namespaced(kube.clone(), &namespace);
    let pod = match super::cluster_common::preflight(|| pods.get_opt("robovast")).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("Error: Required pod 'robovast' does not exist!");
            return Ok(Err(ExitStatus::Failure));
        }
        Err(e) => {
            eprintln!(
                "Error: reading pod 'robovast': {}",
                crate::cluster::error::message(&e)
            );
            return Ok(Err(ExitStatus::Failure));
        }
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".into());
    if phase != "Running" {
        eprintln!("Error: Transfer pod 'robovast' exists but is not running (status: {phase})!");
        return Ok(Err(ExitStatus::Failure));
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let has_http = containers
        .iter()
        .any(|c| c.ports.iter().flatten().any(|p| p.container_port == 80));
    let has_archiver = containers.iter().any(|c| c.name == crate::pod::CONTAINER);
    let state_dir = globals.state_dir();
    std::fs::create_dir_all(&state_dir)?;
    let state_dir = state_dir.canonicalize()?;
    Ok(Ok(Access {
        target: t,
        kube,
        namespace,
        state_dir,
        has_http,
        has_archiver,
    }))
}

/// The `run-*` buckets with their availability (S3 through a port-forward). Both listings are
/// retried with the pre-flight schedule (the S3 client does not retry by itself).
pub async fn list_runs(a: &Access) -> Result<Vec<(String, Availability)>, String> {
    use crate::cluster::s3;
    use crate::ops::base::classified;
    let buckets = super::cluster_common::preflight_policy()
        .retry_if(
            || async {
                let (_forward, client) = s3::forwarded(&a.kube, &a.namespace, "robovast")
                    .await
                    .map_err(|e| classified(e.is_transient(), e))?;
                s3::list_buckets(&client, "run-")
                    .await
                    .map_err(|e| classified(e.is_transient(), e))
            },
            |e| e.kind == crate::engine::ErrorKind::Transient,
        )
        .await
        .map_err(|e| e.message)?;
    super::cluster_common::preflight(|| {
        available_runs(&a.kube, &a.namespace, &a.state_dir, &buckets)
    })
    .await
    .map_err(|e| crate::cluster::error::message(&e))
}

/// Upstream's wording of the command's object ("download", "upload", ...).
pub struct Wording {
    pub not_ready: &'static str,
    pub none_ready: &'static str,
    pub none_found: &'static str,
}

/// Chooses the runs: `--run-id` (an unknown one is an error listing the available runs;
/// one whose state is unknown is taken with a warning), else every ready run. Prints
/// upstream's lines for runs that are not ready. `Err(status)`: nothing to do.
pub fn choose(
    runs: Vec<(String, Availability)>,
    run_id: Option<&str>,
    w: &Wording,
) -> Result<Vec<PlanItem>, ExitStatus> {
    if let Some(r) = run_id {
        let want = crate::manifests::job::label_safe(r);
        let Some((b, av)) = runs.iter().find(|(b, _)| *b == want) else {
            let names: Vec<&str> = runs.iter().map(|(b, _)| b.as_str()).collect();
            eprintln!(
                "Run '{r}' not found. Available runs: {}",
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            );
            return Err(ExitStatus::Failure);
        };
        match av {
            Availability::Ready => {}
            Availability::NotReady {
                running: 0,
                pending: 0,
                reason: Some(why),
                ..
            } => {
                tracing::warn!("Run {b}: {why}; taking it because it was named");
            }
            Availability::NotReady {
                running, pending, ..
            } => {
                println!(
                    "Run {b} {} (jobs still running: {running}, pending: {pending})",
                    w.not_ready
                );
                return Err(ExitStatus::Failure);
            }
        }
        return Ok(vec![PlanItem {
            run: b.clone(),
            bucket: b.clone(),
        }]);
    }
    if runs.is_empty() {
        println!("{}", w.none_found);
        return Err(ExitStatus::Success);
    }
    let mut ready = Vec::new();
    for (b, av) in runs {
        match av {
            Availability::Ready => ready.push(PlanItem {
                run: b.clone(),
                bucket: b,
            }),
            Availability::NotReady {
                running,
                pending,
                unknown,
                reason,
            } => {
                let mut line = format!(
                    "Run {b} {} (jobs still running: {running}, pending: {pending}",
                    w.not_ready
                );
                if unknown > 0 {
                    line.push_str(&format!(", unknown: {unknown}"));
                }
                line.push(')');
                if let Some(r) = reason {
                    line.push_str(&format!(": {r}"));
                }
                println!("{line}");
            }
        }
    }
    if ready.is_empty() {
        println!("{}", w.none_ready);
        return Err(ExitStatus::Success);
    }
    Ok(ready)
}

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
        eprintln!("Error: --port-forward-only and --remote-compress-only are mutually exclusive");
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
            eprintln!("Unexpected error listing runs: {e}");
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
        eprintln!(
            "Error: the robovast pod has no archiver container; --remote-compress-only needs one"
        );
        return Ok(ExitStatus::Failure);
    }
    let mut skipped = 0;
    if let Some(out) = &out {
        if !args.force {
            chosen.retain(|p| {
                let exists = non_empty_dir(&out.join(&p.run));
                if exists {
                    println!("{}  skipped (already exists)", p.run);
                    skipped += 1;
                }
                !exists
            });
        }
        if chosen.is_empty() {
            println!("✓ Download of {skipped} runs completed successfully!");
            return Ok(ExitStatus::Success);
        }
        println!(
            "Downloading {} run results to directory '{}'...",
            chosen.len(),
            out.display()
        );
        if direct && !args.direct {
            tracing::info!("The robovast pod has no HTTP server or archiver: downloading objects directly from S3.");
        }
    } else {
        println!("Compressing {} runs on remote pod...", chosen.len());
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
        eprintln!("Error: the robovast pod has no HTTP server (port 80)");
        return Ok(ExitStatus::Failure);
    }
    let pods: Api<Pod> = Api::namespaced(a.kube.clone(), &a.namespace);
    let forward = PortForward::start(pods.clone(), "robovast", 80).await?;
    let base = forward.http_endpoint();
    let archives = crate::pod::PodScripts::new(pods, "robovast")
        .list_archives()
        .await
        .unwrap_or_default();
    println!("Port-forward active — {base}");
    if archives.is_empty() {
        println!("No .tar.gz archives found on the pod yet.");
    } else {
        println!("Downloadable archives ({}):", archives.len());
        for n in &archives {
            println!("  {base}/{n}");
        }
        println!();
        println!("Example:  curl -O {base}/{}", archives[0]);
    }
    println!("Press Ctrl+C to stop the port-forward.");
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
            eprintln!("Error: listing runs: {e}");
            return Ok(ExitStatus::Failure);
        }
    };
    let runs: Vec<(String, Availability)> = match &args.run_id {
        Some(r) => {
            let found: Vec<_> = runs.into_iter().filter(|(b, _)| b == r).collect();
            if found.is_empty() {
                println!("No bucket matching '{r}' found.");
                println!("✓ Removed 0 bucket(s) from S3.");
                return Ok(ExitStatus::Success);
            }
            found
        }
        None => runs,
    };
    if runs.is_empty() {
        println!("No run buckets found to remove.");
        println!("✓ Removed 0 bucket(s) from S3.");
        return Ok(ExitStatus::Success);
    }
    let mut chosen = Vec::new();
    let mut refused = 0;
    for (b, av) in runs {
        match av {
            Availability::NotReady {
                running, pending, ..
            } if (running > 0 || pending > 0) && !args.force => {
                eprintln!(
                    "Refusing to remove '{b}': its run is still active (jobs running: {running}, pending: {pending}); use --force to remove it anyway"
                );
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
    println!("✓ Removed {removed} bucket(s) from S3.");
    if refused > 0 && status == ExitStatus::Success {
        return Ok(ExitStatus::Failure);
    }
    Ok(status)
}
