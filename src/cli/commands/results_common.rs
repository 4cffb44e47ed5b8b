//! What the results commands (`download`, `download-cleanup`, `upload-to-share`) share before
//! their workflow starts: access to the cluster and the robovast pod with upstream's
//! messages ([`connect`]), the runs in the pod's S3 and whether each is ready
//! ([`list_runs`]), and the choice of runs with the wording of each command ([`choose`]).

use crate::cli::output;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use super::cluster_common::{access, target, Target};
use crate::cli::{ExitStatus, Globals, UsageError};
use crate::ops::results::{available_runs, Availability, PlanItem};

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
            output::error(format!("✗ Error: {m}"));
            return Ok(Err(ExitStatus::Failure));
        }
    };
    let pods: Api<Pod> = Api::namespaced(kube.clone(), &namespace);
    let pod = match super::cluster_common::preflight(|| pods.get_opt("robovast")).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            output::error("Error: Required pod 'robovast' does not exist!");
            output::error(format!(
                "hint: the cluster has no robovast setup in namespace '{namespace}' (removed by \
                 `vast execution cluster cleanup`?); run `vast execution cluster setup CONFIG` \
                 first (results removed with it are gone), or check the context with `vast doctor`"
            ));
            return Ok(Err(ExitStatus::Failure));
        }
        Err(e) => {
            output::error(format!(
                "Error: reading pod 'robovast': {}",
                crate::cluster::error::message(&e)
            ));
            return Ok(Err(ExitStatus::Failure));
        }
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".into());
    if phase != "Running" {
        output::error(format!(
            "Error: Transfer pod 'robovast' exists but is not running (status: {phase})!"
        ));
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
            output::error(format!(
                "Run '{r}' not found. Available runs: {}",
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            ));
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
                output::status(format!(
                    "Run {b} {} (jobs still running: {running}, pending: {pending})",
                    w.not_ready
                ));
                return Err(ExitStatus::Failure);
            }
        }
        return Ok(vec![PlanItem {
            run: b.clone(),
            bucket: b.clone(),
        }]);
    }
    if runs.is_empty() {
        output::result(w.none_found);
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
                output::status(&line);
            }
        }
    }
    if ready.is_empty() {
        output::result(w.none_ready);
        return Err(ExitStatus::Success);
    }
    Ok(ready)
}

/// The share provider and its variables, chosen and checked from `.env` / the environment
/// before any cluster access (upstream's messages); the values never enter a run's
/// parameters.
pub struct ShareSelection {
    pub selected: crate::share::Selected,
    pub share_type: String,
    pub project_dir: Option<std::path::PathBuf>,
    pub vast_dir: Option<std::path::PathBuf>,
    /// A plugin provider's script (key, text), shipped in the scripts ConfigMap.
    pub plugin_scripts: Vec<(String, String)>,
}

pub fn share_selection() -> anyhow::Result<ShareSelection> {
    let cwd = std::env::current_dir()?;
    let project = crate::project::files::Project::find(&cwd).ok();
    let project_dir = project.as_ref().map(|p| p.dir.clone());
    let vast_dir = project
        .as_ref()
        .and_then(|p| p.config.parent().map(|d| d.to_path_buf()));
    let vars = crate::share::Vars::load(vast_dir.as_deref(), project_dir.as_deref())
        .map_err(|e| UsageError(e.to_string()))?;
    let (providers, warnings) = crate::share::providers(project_dir.as_deref());
    for w in warnings {
        tracing::warn!("{w}");
    }
    let selected =
        crate::share::select(&vars, &providers).map_err(|e| UsageError(e.to_string()))?;
    let share_type = selected.provider.manifest.share_type.clone();
    if let Some(url) = &selected.display_url {
        output::status(format!("Share target ({share_type}): {url}"));
    }
    let plugin_scripts = if selected.provider.builtin {
        Vec::new()
    } else {
        vec![(
            selected.provider.script_key(),
            selected.provider.script.clone(),
        )]
    };
    Ok(ShareSelection {
        selected,
        share_type,
        project_dir,
        vast_dir,
        plugin_scripts,
    })
}
