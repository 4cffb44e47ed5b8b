//! `vast doctor [-x CTX] [--json]`: checks, in order, what vast needs and says for each part
//! `ok`, `warn` or `fail` with the fix: the kubeconfig and the context, the API server, helm,
//! Kueue's CRDs, the saved setup, the robovast pod, MinIO through a port-forward, and the state
//! directory. A part that cannot be checked because an earlier one failed is `skip`. Exit 1
//! when any part fails. Read-only: it changes nothing.

use std::time::Duration;

use serde::Serialize;

use super::cluster_common::{check_access, check_pod, target};
use crate::cli::args::DoctorArgs;
use crate::cli::{ExitStatus, Globals};

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub part: &'static str,
    /// ok | warn | fail | skip
    pub status: &'static str,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(part: &'static str, status: &'static str, detail: impl Into<String>) -> Check {
    Check {
        part,
        status,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, f: impl Into<String>) -> Check {
        self.fix = Some(f.into());
        self
    }
}

/// How long one cluster call of the doctor may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

async fn timed<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
    }
}

pub async fn run(args: DoctorArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let checks = checks(&args, globals).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        let mut rows = Vec::new();
        for c in &checks {
            rows.push(vec![
                c.status.to_string(),
                c.part.to_string(),
                c.detail.clone(),
            ]);
            if let Some(f) = &c.fix {
                rows.push(vec![String::new(), String::new(), format!("fix: {f}")]);
            }
        }
        print!("{}", crate::cli::output::render_table(&[], &rows, 2));
    }
    Ok(if checks.iter().any(|c| c.status == "fail") {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

async fn checks(args: &DoctorArgs, globals: &Globals) -> Vec<Check> {
    let mut out = Vec::new();
    // The kubeconfig and the context.
    let contexts: Vec<String> = match crate::cluster::client::context_names() {
        Ok(names) => {
            let from = std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into());
            out.push(check(
                "kubeconfig",
                "ok",
                format!(
                    "{from} ({} context{})",
                    names.len(),
                    if names.len() == 1 { "" } else { "s" }
                ),
            ));
            names
        }
        Err(e) => {
            out.push(
                check("kubeconfig", "fail", format!("cannot read the kubeconfig: {e}"))
                    .fix("set KUBECONFIG or create ~/.kube/config (e.g. `gcloud container clusters get-credentials ...`)"),
            );
            Vec::new()
        }
    };
    let context = args
        .context
        .clone()
        .or_else(crate::project::resources::active_kube_context);
    match &context {
        Some(c) if contexts.contains(c) => out.push(check("context", "ok", c.clone())),
        Some(c) => out.push(
            check(
                "context",
                "fail",
                format!("context '{c}' is not in the kubeconfig"),
            )
            .fix(format!(
                "use one of: {}",
                if contexts.is_empty() {
                    "(none)".to_string()
                } else {
                    contexts.join(", ")
                }
            )),
        ),
        None => out.push(
            check("context", "fail", "no context given and no current context")
                .fix("pass -x CONTEXT or run `kubectl config use-context CONTEXT`"),
        ),
    }
    let cluster_ok = out.iter().all(|c| c.status != "fail");

    // The target: project, saved setup, namespace (no cluster call).
    let t = target(globals, context.clone(), false);
    let namespace = t
        .as_ref()
        .map(|t| t.namespace())
        .unwrap_or_else(|_| "default".into());

    // The API server.
    let mut client = None;
    if cluster_ok {
        match crate::cluster::client::client(context.as_deref()).await {
            Ok(c) => match timed(async { check_access(&c, &namespace).await }).await {
                Ok(line) => {
                    out.push(check("api server", "ok", line));
                    client = Some(c);
                }
                Err(e) => out.push(
                    check("api server", "fail", format!("unreachable through context '{}': {e}", context.as_deref().unwrap_or("")))
                        .fix("check the cluster is up and the context's server address and credentials (`kubectl --context CTX get nodes`)"),
                ),
            },
            Err(e) => out.push(check("api server", "fail", e.to_string()).fix("fix the context's entry in the kubeconfig")),
        }
    } else {
        out.push(check("api server", "skip", "no usable context"));
    }

    // helm (only needed to install Kueue).
    match crate::cluster::kueue::helm() {
        Some(p) => out.push(check("helm", "ok", p.display().to_string())),
        None => out.push(
            check("helm", "warn", "not on PATH: `setup` cannot install Kueue")
                .fix("install helm, or install Kueue 0.16.1 yourself (then setup skips it)"),
        ),
    }

    // Kueue's CRDs.
    match &client {
        Some(c) => match timed(crate::cluster::kueue::missing_crds(c)).await {
            Ok(m) if m.is_empty() => out.push(check("kueue", "ok", "CRDs present")),
            Ok(m) => out.push(
                check("kueue", "fail", format!("CRDs missing: {}", m.join(", ")))
                    .fix("run `vast execution cluster setup CONFIG` (it installs Kueue with helm)"),
            ),
            Err(e) => out.push(check("kueue", "fail", format!("cannot list CRDs: {e}"))),
        },
        None => out.push(check("kueue", "skip", "API server not reachable")),
    }

    // The saved setup.
    let setup_ok = match &t {
        Ok(t) if t.setup.is_some() => {
            out.push(check(
                "setup",
                "ok",
                format!("saved (namespace {namespace})"),
            ));
            true
        }
        Ok(t) if t.project.is_none() => {
            out.push(
                check(
                    "setup",
                    "warn",
                    "no project here (no .robovast_project found upward)",
                )
                .fix("run `vast init FILE.vast` in the project directory"),
            );
            false
        }
        Ok(_) => {
            out.push(
                check(
                    "setup",
                    "warn",
                    format!(
                        "no saved setup for context '{}'",
                        context.as_deref().unwrap_or("")
                    ),
                )
                .fix("run `vast execution cluster setup CONFIG` (rke2, gcp, minikube, azure)"),
            );
            false
        }
        Err(e) => {
            out.push(check("setup", "fail", format!("{e:#}")));
            false
        }
    };

    // The robovast pod and MinIO through a port-forward.
    match &client {
        Some(c) if setup_ok => match timed(async { check_pod(c, &namespace).await }).await {
            Ok(()) => {
                out.push(check(
                    "robovast pod",
                    "ok",
                    format!("Running in {namespace}"),
                ));
                let s3 = async {
                    let (_forward, s3) = crate::cluster::s3::forwarded(c, &namespace, "robovast")
                        .await
                        .map_err(|e| e.to_string())?;
                    crate::cluster::s3::list_buckets(&s3, "")
                        .await
                        .map_err(|e| e.to_string())
                };
                match timed(s3).await {
                        Ok(b) => out.push(check("s3", "ok", format!("MinIO answers through a port-forward ({} bucket{})", b.len(), if b.len() == 1 { "" } else { "s" }))),
                        Err(e) => out.push(
                            check("s3", "fail", format!("MinIO through a port-forward: {e}"))
                                .fix("check the robovast pod's logs (`kubectl logs robovast -c minio`) and the Secret vast-s3-credentials"),
                        ),
                    }
            }
            Err(e) => {
                out.push(
                    check("robovast pod", "fail", e)
                        .fix("run `vast execution cluster setup CONFIG --force` to re-create it"),
                );
                out.push(check("s3", "skip", "no running robovast pod"));
            }
        },
        Some(_) => {
            out.push(check("robovast pod", "skip", "no saved setup"));
            out.push(check("s3", "skip", "no saved setup"));
        }
        None => {
            out.push(check("robovast pod", "skip", "API server not reachable"));
            out.push(check("s3", "skip", "API server not reachable"));
        }
    }

    // The state directory.
    let state = globals.state_dir();
    let dir = crate::store::StateDir::new(&state);
    match dir.list() {
        Ok(runs) => {
            let executing = runs.iter().filter(|r| r.holder.is_some()).count();
            let unreadable = runs
                .iter()
                .filter(|r| !matches!(r.snapshot, Ok(Some(_))))
                .count();
            let lost: Vec<&str> = runs
                .iter()
                .filter(|r| dir.run_dir(&r.id).join("lost").exists())
                .map(|r| r.id.as_str())
                .collect();
            let detail = format!(
                "{} ({} run{}, {executing} executing)",
                state.display(),
                runs.len(),
                if runs.len() == 1 { "" } else { "s" }
            );
            if !lost.is_empty() {
                out.push(
                    check(
                        "state dir",
                        "warn",
                        format!("{detail}; journal lost records: {}", lost.join(", ")),
                    )
                    .fix("check the cluster, then `vast resume RUN --force`"),
                );
            } else if unreadable > 0 {
                out.push(
                    check(
                        "state dir",
                        "warn",
                        format!("{detail}; {unreadable} without a readable snapshot"),
                    )
                    .fix("`vast runs show RUN` names the damage"),
                );
            } else {
                out.push(check("state dir", "ok", detail));
            }
        }
        Err(e) => out.push(
            check("state dir", "fail", format!("{}: {e}", state.display()))
                .fix("check the directory's permissions, or pass --state-dir"),
        ),
    }
    out
}
