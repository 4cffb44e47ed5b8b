//! What the cluster steps share: the [`ClusterEnv`] resource (kube client, context, namespace)
//! built from a run's parameters (so `vast resume` rebuilds it), and the mapping of errors to
//! classified [`StepError`]s: cluster API errors ([`kube_err`]) and local I/O errors
//! ([`io_err`], classified by `results::io::classify_io`: a read-only file system or a denied
//! permission fails the step at once, naming the path).

use serde_json::Value;

use crate::cluster::error::{classify, message, Class};
use crate::engine::{ErrorKind, StepContext, StepError};
use crate::results::io::PathError;

/// The cluster a run talks to. Built from the run's `context` and `namespace` parameters.
#[derive(Clone)]
pub struct ClusterEnv {
    pub client: kube::Client,
    /// `--context/-x` (None: the kubeconfig's current context).
    pub context: Option<String>,
    pub namespace: String,
}

/// Operations that talk to a cluster (their runs get a [`ClusterEnv`]).
pub const CLUSTER_OPERATIONS: &[&str] = &[
    "setup",
    "cleanup",
    "run",
    "run-cleanup",
    "download",
    "download-cleanup",
    "remote-compress",
    "upload-to-share",
    "campaign",
    "campaign-share",
    "rerun",
];

/// The [`ClusterEnv`] of a run of a cluster operation, from its `context` and `namespace`
/// parameters (the kubeconfig is read again, so a resumed run uses the same context); None
/// for operations without cluster access. The operations' own resources are added by
/// [`crate::ops::resources_for`].
pub async fn cluster_env(operation: &str, params: &Value) -> Result<Option<ClusterEnv>, String> {
    if !CLUSTER_OPERATIONS.contains(&operation) {
        return Ok(None);
    }
    let context = params
        .get("context")
        .and_then(Value::as_str)
        .map(String::from);
    let namespace = params
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let client = crate::cluster::client::client(context.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(ClusterEnv {
        client,
        context,
        namespace,
    }))
}

/// The run's cluster.
pub fn env(cx: &StepContext) -> Result<std::sync::Arc<ClusterEnv>, StepError> {
    cx.resource::<ClusterEnv>()
}

/// A failed API call as a step error: `<what>: <server's message>`, transient or permanent by
/// [`classify`], with the server's Retry-After.
pub fn kube_err(what: impl std::fmt::Display, e: &kube::Error) -> StepError {
    let text = format!("{what}: {}", message(e));
    match classify(e) {
        Class::Transient { retry_after } => {
            let err = StepError::transient(text);
            match retry_after {
                Some(d) => err.retry_after(d),
                None => err,
            }
        }
        Class::Permanent => StepError::permanent(text),
    }
}

/// A failed operation on a local path as a step error, `cannot <action> <path>: <error>`,
/// transient or permanent by [`classify_io`](crate::results::io::classify_io).
pub fn io_err(action: &'static str, path: &std::path::Path, err: std::io::Error) -> StepError {
    PathError::new(action, path, err).into()
}

impl From<PathError> for StepError {
    fn from(e: PathError) -> StepError {
        match e.kind() {
            ErrorKind::Permanent => StepError::permanent(e.to_string()),
            _ => StepError::transient(e.to_string()),
        }
    }
}

/// An error as a step error of the given class.
pub fn classified(transient: bool, err: impl std::fmt::Display) -> StepError {
    if transient {
        StepError::transient(err.to_string())
    } else {
        StepError::permanent(err.to_string())
    }
}

/// Waits `d` unless the run is cancelled.
pub async fn sleep(cx: &StepContext, d: std::time::Duration) -> Result<(), StepError> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cx.cancel_token().cancelled() => Err(StepError::cancelled()),
    }
}

/// Failpoint helper: `fail_point!(name)` configured with `return(msg)` fails the step
/// transiently, with `panic` it simulates a crash in the middle of the step.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub fn injected(name: &str, arg: Option<String>) -> Result<Value, StepError> {
    Err(StepError::transient(format!(
        "failpoint {name}{}",
        arg.map(|a| format!(": {a}")).unwrap_or_default()
    )))
}

/// The step's budget `name` (workflow data, `budgets:`). A run created before budgets were
/// workflow data has a persisted definition without them: it gets `before_budgets`, the value
/// such runs were started with, so resuming it after an upgrade keeps its behaviour.
pub fn budget(cx: &StepContext, name: &str, before_budgets: u32) -> u32 {
    cx.budget(name).unwrap_or(before_budgets)
}

/// The robovast pod's name.
pub const ROBOVAST_POD: &str = "robovast";

/// A failed server-side apply as a step error (classified like the API error under it).
pub fn apply_err(err: &crate::cluster::objects::ApplyError) -> StepError {
    match err.kube() {
        Some(k) => {
            let mut s = kube_err("", k);
            s.message = err.to_string();
            s
        }
        None => StepError::permanent(err.to_string()),
    }
}

/// Registers async step functions under their implementation names, each name written once:
/// `register_steps!(r; "setup.access" => access, ...)`. Every step gets the failpoint of its
/// name (`FAILPOINTS='setup.access=return(..)'` fails it transiently, `=panic` crashes in it).
macro_rules! register_steps {
    ($r:expr; $($name:literal => $body:path),* $(,)?) => {{
        $({
            struct S;
            impl $crate::engine::Step for S {
                fn run<'a>(
                    &'a self,
                    cx: &'a $crate::engine::StepContext,
                ) -> futures::future::BoxFuture<'a, Result<serde_json::Value, $crate::engine::StepError>> {
                    Box::pin(async move {
                        fail::fail_point!($name, |a| $crate::ops::base::injected($name, a));
                        $body(cx).await
                    })
                }
            }
            $r.register($name, S);
        })*
    }};
}
pub(crate) use register_steps;
