//! What the cluster commands share: the target (context, project, saved setup, namespace),
//! upstream's pre-flight checks with their messages, the kube client, and the retry of the
//! commands' own cluster calls ([`preflight`]: the steps' `RetryPolicy` through `retry_if`,
//! the only retry layer of a call made outside a workflow).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::cli::{Globals, UsageError};
use crate::engine::retry::RetryPolicy;
use crate::project::files::{read_setup, ClusterSetup, Project};
use crate::project::resources::{active_kube_context, require_context_for_multi_cluster};

/// Where a cluster command acts.
#[derive(Debug, Clone)]
pub struct Target {
    /// `--context/-x` as given.
    pub context: Option<String>,
    /// The context key of the saved setup (explicit context, else the active one).
    pub setup_key: Option<String>,
    pub project: Option<Project>,
    pub setup: Option<ClusterSetup>,
}

impl Target {
    /// `kwargs.namespace` of the saved setup, else `default`.
    pub fn namespace(&self) -> String {
        self.setup
            .as_ref()
            .map(|s| s.namespace().to_string())
            .unwrap_or_else(|| "default".into())
    }

    pub fn project_dir(&self) -> Option<PathBuf> {
        self.project.as_ref().map(|p| p.dir.clone())
    }
}

/// Resolves the target: the multi-cluster context check of the `.vast` file, the project
/// (required when `need_project`), and the saved setup of the resolved context.
pub fn target(
    globals: &Globals,
    context: Option<String>,
    need_project: bool,
) -> anyhow::Result<Target> {
    target_with(globals, context, need_project, true)
}

/// [`target`]; `one_context: false` skips the multi-cluster check (monitor watches them all).
/// A context without a saved setup while the setup of a context the kubeconfig no longer has
/// is there (a renamed context) is a usage error saying how to re-associate it.
pub fn target_with(
    globals: &Globals,
    context: Option<String>,
    need_project: bool,
    one_context: bool,
) -> anyhow::Result<Target> {
    let t = resolve(globals, context, need_project, one_context)?;
    if let (None, Some(p), Some(key)) = (&t.setup, &t.project, &t.setup_key) {
        if let Some(m) = renamed_context_hint(&p.dir, key) {
            return Err(UsageError(m).into());
        }
    }
    Ok(t)
}

/// The target of `setup`, which creates the saved setup: a renamed context's leftover setup
/// does not stop it.
pub fn setup_target(globals: &Globals, context: Option<String>) -> anyhow::Result<Target> {
    resolve(globals, context, true, true)
}

fn resolve(
    globals: &Globals,
    context: Option<String>,
    need_project: bool,
    one_context: bool,
) -> anyhow::Result<Target> {
    let cwd = std::env::current_dir()?;
    let project = match Project::find(&cwd) {
        Ok(p) => Some(p),
        Err(e) if need_project => return Err(UsageError(e.to_string()).into()),
        Err(_) => None,
    };
    let vast = globals
        .vast_file
        .clone()
        .or_else(|| project.as_ref().map(|p| p.config.clone()));
    if one_context {
        require_context_for_multi_cluster(context.as_deref(), vast.as_deref())
            .map_err(|e| UsageError(e.to_string()))?;
    }
    let setup_key = context.clone().or_else(active_kube_context);
    let setup = match &project {
        Some(p) => read_setup(&p.dir, setup_key.as_deref(), context.is_some())
            .map_err(|e| UsageError(e.to_string()))?,
        None => None,
    };
    Ok(Target {
        context,
        setup_key,
        project,
        setup,
    })
}

/// Context `key` has no saved setup, but a setup of a context the kubeconfig no longer has is
/// there (the context was renamed, e.g. `kubectl config rename-context vast-sim local`): how to
/// re-associate it, naming the file to rename and the setup command otherwise. None when no
/// such file exists (or the kubeconfig cannot be read).
pub fn renamed_context_hint(project_dir: &std::path::Path, key: &str) -> Option<String> {
    let known = crate::cluster::client::context_names().ok()?;
    renamed_context_message(project_dir, key, &known)
}

/// [`renamed_context_hint`] with the kubeconfig's context names given.
pub fn renamed_context_message(
    project_dir: &std::path::Path,
    key: &str,
    known: &[String],
) -> Option<String> {
    use crate::project::files::{orphan_setups, setup_file_name, SETUP_FILE};
    let orphans = orphan_setups(project_dir, known);
    let want = setup_file_name(Some(key));
    let first = orphans.first()?;
    let old = |f: &str| {
        f.trim_start_matches(SETUP_FILE)
            .trim_start_matches('.')
            .to_string()
    };
    let which = if orphans.len() == 1 {
        format!(
            "the saved setup {first} belongs to context '{}', which is no longer in the kubeconfig (renamed?)",
            old(first)
        )
    } else {
        format!(
            "saved setups of contexts no longer in the kubeconfig exist ({}; renamed?)",
            orphans.join(", ")
        )
    };
    Some(format!(
        "no saved cluster setup for context '{key}' ({want} in {dir}), but {which}.\n\
         If '{key}' is that cluster, re-associate the setup: mv {dir}/{first} {dir}/{want}\n\
         Otherwise set the cluster up: vast execution cluster setup <cluster-config> --context {key}",
        dir = project_dir.display()
    ))
}

/// The kube client for `context`; a broken kubeconfig or unknown context gives upstream's
/// `Kubernetes configuration not found: ...` (the message after `✗ Error: `).
pub async fn connect(context: Option<&str>) -> Result<kube::Client, String> {
    crate::cluster::client::client(context)
        .await
        .map_err(|e| format!("Kubernetes configuration not found: {e}"))
}

/// The retry schedule of the commands' own cluster calls (pre-flight checks, run listings,
/// `upload-configs`): 5 attempts, 200 ms doubling (±20 %), at most 30 s. The same
/// [`RetryPolicy`] as the steps', applied with [`RetryPolicy::retry_if`].
pub fn preflight_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_interval: std::time::Duration::from_millis(200),
        multiplier: 2.0,
        max_interval: std::time::Duration::from_secs(5),
        max_elapsed: Some(std::time::Duration::from_secs(30)),
        jitter: 0.2,
    }
}

/// Calls `f` until it succeeds, fails permanently, or [`preflight_policy`] is spent: the
/// pre-flight checks ride out a flaky network like the steps do.
pub async fn preflight<T, F, Fut>(f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    preflight_policy()
        .retry_if(f, |e| crate::cluster::error::classify(e).is_transient())
        .await
}

/// Upstream's access check for `context`: the client (kept for the later checks), then
/// [`check_access`]. `Ok` holds the `Kubernetes cluster is accessible (...)` line, `Err` the
/// message after `✗ Error: `.
pub async fn access(
    context: Option<&str>,
    namespace: &str,
) -> Result<(kube::Client, String), String> {
    let client = connect(context).await?;
    let line = check_access(&client, namespace).await.map_err(|m| {
        // One line naming where vast tried to connect.
        match crate::cluster::client::server_of(context) {
            Some((ctx, server)) if m.starts_with("Failed to check") => {
                format!("{m} (context '{ctx}', server {server})")
            }
            _ => m,
        }
    })?;
    Ok((client, line))
}

/// Upstream's access check: server version and one pod listed in the namespace.
pub async fn check_access(client: &kube::Client, namespace: &str) -> Result<String, String> {
    let version = preflight(|| client.apiserver_version())
        .await
        .map_err(access_error)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let one = ListParams::default().limit(1);
    preflight(|| pods.list(&one)).await.map_err(access_error)?;
    Ok(format!(
        "Kubernetes cluster is accessible (version {}.{}, namespace {namespace})",
        version.major, version.minor
    ))
}

/// The deepest cause of an error ("tcp connect error: Connection refused (os error 111)"),
/// without the layers that repeat it.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A failed call to `context`'s API server in one line: the API's answer, or the deepest cause
/// of a connection failure with the server it tried ("Connection refused (os error 111)
/// (server http://127.0.0.1:9)").
pub fn call_error(e: &kube::Error, context: Option<&str>) -> String {
    match e {
        kube::Error::Api(_) => crate::cluster::error::message(e),
        other => {
            let cause = innermost(other);
            match crate::cluster::client::server_of(context) {
                Some((_, server)) => format!("{cause} (server {server})"),
                None => cause,
            }
        }
    }
}

fn access_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("Kubernetes API error: {} - {}", s.code, s.reason),
        other => format!("Failed to check Kubernetes access: {}", innermost(&other)),
    }
}

/// Upstream's pod check: pod `robovast` must be Running.
pub async fn check_pod(client: &kube::Client, namespace: &str) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match preflight(|| pods.get_opt("robovast")).await {
        Ok(Some(p)) => {
            let phase = p
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "Unknown".into());
            if phase == "Running" {
                Ok(())
            } else {
                Err(format!("Pod is not running (status: {phase})"))
            }
        }
        Ok(None) => Err("Pod 'robovast' does not exist".into()),
        Err(e) => Err(format!(
            "Error checking pod status: {}",
            crate::cluster::error::message(&e)
        )),
    }
}

/// Parses `-o key=value` options (upstream's message for a bad one).
pub fn parse_options(
    options: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for o in options {
        let (k, v) = crate::manifests::cluster_config::parse_option(o)
            .map_err(|e| UsageError(e.to_string()))?;
        out.insert(k, v);
    }
    Ok(out)
}

/// The context a run acts on, as a JSON parameter: `--context`, else the kubeconfig's
/// current context *by name*, so that `vast resume` talks to the same cluster even after
/// `kubectl config use-context` switched the active one (null only without a kubeconfig
/// context, e.g. in-cluster).
pub fn context_param(c: &Option<String>) -> serde_json::Value {
    c.clone()
        .or_else(active_kube_context)
        .map(serde_json::Value::String)
        .unwrap_or_default()
}

/// The resources of a cluster operation's run.
pub async fn resources(
    operation: &str,
    params: &serde_json::Value,
) -> anyhow::Result<crate::engine::Resources> {
    crate::ops::resources_for(operation, params)
        .await
        .map_err(|e| UsageError(e).into())
}
