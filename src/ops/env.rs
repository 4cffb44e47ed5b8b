//! What the cluster steps share: the [`ClusterEnv`] resource (kube client, context, namespace)
//! built from a run's parameters (so `vast resume` rebuilds it), and the mapping of errors to
//! classified [`StepError`]s: cluster API errors ([`kube_err`]) and local I/O errors
//! ([`io_err`], classified by `results::io::classify_io`: a read-only file system or a denied
//! permission fails the step at once, naming the path).

use serde_json::Value;

use crate::cluster::error::{classify, message, Class};
use crate::engine::{ErrorKind, Resources, StepContext, StepError};
use crate::results::io::PathError;

/// The cluster a run talks to. Built from the run's `context` and `namespace` parameters.
#[derive(Clone)]
pub struct ClusterEnv {
    pub client: kube::Client,
    /// `--context/-x` (None: the kubeconfig's current context).
    pub context: Option<String>,
    pub namespace: String,
}

/// Builds the resources of a run of a cluster operation from its parameters: the kube client
/// for the run's context (the kubeconfig is read again, so a resumed run uses the same
/// context). Operations without cluster access get none.
pub async fn resources_for(operation: &str, params: &Value) -> Result<Resources, String> {
    let mut r = Resources::default();
    if !super::CLUSTER_OPERATIONS.contains(&operation) {
        return Ok(r);
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
    r.insert(ClusterEnv {
        client,
        context,
        namespace,
    });
    r.insert(super::run::ProjectCache::default());
    let verbose = params
        .get("verbose")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    r.insert(super::results::Display(
        crate::results::progress::Mode::detect(verbose),
    ));
    if operation == "upload-to-share" {
        // The provider's variables come from the environment and `.env` files, never from
        // the run's parameters (they are secrets): a resume reads them again.
        let dir = |k: &str| {
            params
                .get(k)
                .and_then(Value::as_str)
                .map(std::path::PathBuf::from)
        };
        let (vast_dir, project_dir) = (dir("vast_dir"), dir("project_dir"));
        let vars = crate::share::Vars::load(vast_dir.as_deref(), project_dir.as_deref())
            .map_err(|e| e.to_string())?;
        let (providers, _) = crate::share::providers(project_dir.as_deref());
        if let Ok(sel) = crate::share::select(&vars, &providers) {
            r.insert(super::share::ShareEnv(sel));
        }
    }
    Ok(r)
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
