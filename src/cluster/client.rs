//! A kube [`Client`] from the kubeconfig (`KUBECONFIG` honoured, else `~/.kube/config`), for
//! the active context or a named one.

use kube::config::{KubeConfigOptions, KubeconfigError};
use kube::{Client, Config};

/// A problem building the Kubernetes client. All of them are permanent: the kubeconfig or the
/// context has to be fixed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot load the kubeconfig (KUBECONFIG or ~/.kube/config){}: {source}", context_note(.context))]
    Kubeconfig {
        context: Option<String>,
        #[source]
        source: KubeconfigError,
    },
    #[error("context '{context}' is not in the kubeconfig; its contexts: {}", if .known.is_empty() { "(none)".to_string() } else { .known.join(", ") })]
    UnknownContext { context: String, known: Vec<String> },
    #[error("cannot build a Kubernetes client{}: {source}", context_note(.context))]
    Client {
        context: Option<String>,
        #[source]
        source: kube::Error,
    },
}

fn context_note(context: &Option<String>) -> String {
    match context {
        Some(c) => format!(" for context '{c}'"),
        None => String::new(),
    }
}

/// The names of the contexts in the kubeconfig (`KUBECONFIG`'s files merged, else
/// `~/.kube/config`).
pub fn context_names() -> Result<Vec<String>, KubeconfigError> {
    Ok(kube::config::Kubeconfig::read()?
        .contexts
        .into_iter()
        .map(|c| c.name)
        .collect())
}

/// The context name and API server URL the kubeconfig gives for `context` (default: its current
/// context), for messages; None when the kubeconfig does not say.
pub fn server_of(context: Option<&str>) -> Option<(String, String)> {
    let kc = kube::config::Kubeconfig::read().ok()?;
    let name = context
        .map(String::from)
        .or_else(|| kc.current_context.clone())?;
    let ctx = kc.contexts.iter().find(|c| c.name == name)?;
    let cluster = ctx.context.as_ref()?.cluster.clone();
    let server = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster)?
        .cluster
        .as_ref()?
        .server
        .clone()?;
    Some((name, server))
}

/// The client for `context` (default: the kubeconfig's current context).
pub async fn client(context: Option<&str>) -> Result<Client, ClientError> {
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let kubeconfig_err = |source| ClientError::Kubeconfig {
        context: context.map(String::from),
        source,
    };
    // An unknown context names the ones that exist (kube-rs would only say it is missing).
    if let (Some(c), Ok(known)) = (context, context_names()) {
        if !known.iter().any(|k| k == c) {
            return Err(ClientError::UnknownContext {
                context: c.to_string(),
                known,
            });
        }
    }
    let config = Config::from_kubeconfig(&options)
        .await
        .map_err(kubeconfig_err)?;
    Client::try_from(config).map_err(|source| ClientError::Client {
        context: context.map(String::from),
        source,
    })
}
