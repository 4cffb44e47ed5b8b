//! Kueue on a live cluster: whether its CRDs are installed and established, install / upgrade /
//! uninstall through the `helm` CLI when it is on PATH (chart, version, namespace and values of
//! upstream section 4.3), the webhook readiness probe, the ClusterQueue's `stopPolicy`, and
//! Workload access.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::Client;
use serde_json::json;

use crate::manifests::kueue::{
    helm_values, CLUSTER_QUEUE, KUEUE_API, KUEUE_CHART, KUEUE_NAMESPACE, KUEUE_RELEASE,
    KUEUE_VERSION,
};

/// The CRDs vast needs.
pub const CRDS: &[&str] = &[
    "resourceflavors.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "localqueues.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
];

/// How long one helm command may take (upstream: 300 s).
pub const HELM_TIMEOUT: Duration = Duration::from_secs(300);

/// The CRDs that are missing or not yet `Established` (empty: Kueue's API is served).
pub async fn missing_crds(client: &Client) -> Result<Vec<String>, kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for name in CRDS {
        let established = api.get_opt(name).await?.is_some_and(|crd| {
            crd.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if !established {
            missing.push(name.to_string());
        }
    }
    Ok(missing)
}

/// The `helm` executable on PATH, if any (`VAST_HELM` overrides the name).
pub fn helm() -> Option<PathBuf> {
    let name = std::env::var("VAST_HELM").unwrap_or_else(|_| "helm".into());
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(&name))
            .find(|p| p.is_file())
    })
}

/// A failed helm command: upstream's `Helm command failed: <stderr or stdout>`.
#[derive(Debug, thiserror::Error)]
#[error("Helm command failed: {0}")]
pub struct HelmError(pub String);

async fn run_helm(helm: &PathBuf, args: &[String]) -> Result<String, HelmError> {
    let mut cmd = tokio::process::Command::new(helm);
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(HELM_TIMEOUT, cmd.output())
        .await
        .map_err(|_| HelmError(format!("no answer within {} s", HELM_TIMEOUT.as_secs())))?
        .map_err(|e| HelmError(format!("cannot run {}: {e}", helm.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(HelmError(if stderr.is_empty() {
            stdout.trim().to_string()
        } else {
            stderr
        }))
    }
}

fn context_arg(context: Option<&str>) -> Vec<String> {
    context
        .map(|c| vec![format!("--kube-context={c}")])
        .unwrap_or_default()
}

/// Whether the helm release `kueue` exists in `kueue-system`.
pub async fn helm_release_exists(helm: &PathBuf, context: Option<&str>) -> Result<bool, HelmError> {
    let mut args: Vec<String> = ["list", "-n", KUEUE_NAMESPACE, "-q", "-f", KUEUE_RELEASE]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(context_arg(context));
    Ok(!run_helm(helm, &args).await?.trim().is_empty())
}

/// `helm upgrade` (release exists) or `helm install --create-namespace` of the pinned chart
/// with upstream's values. Returns which was done.
pub async fn helm_install(
    helm: &PathBuf,
    context: Option<&str>,
    upgrade: bool,
) -> Result<&'static str, HelmError> {
    let dir = std::env::temp_dir().join(format!(
        "vast-kueue-values-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&dir, helm_values())
        .map_err(|e| HelmError(format!("cannot write {}: {e}", dir.display())))?;
    let mut args: Vec<String> = vec![
        if upgrade { "upgrade" } else { "install" }.into(),
        KUEUE_RELEASE.into(),
        KUEUE_CHART.into(),
        format!("--version={KUEUE_VERSION}"),
    ];
    if !upgrade {
        args.push("--create-namespace".into());
    }
    args.push(format!("--namespace={KUEUE_NAMESPACE}"));
    args.push(format!("--values={}", dir.display()));
    args.extend(context_arg(context));
    let result = run_helm(helm, &args).await;
    let _ = std::fs::remove_file(&dir);
    result.map(|_| if upgrade { "upgraded" } else { "installed" })
}

/// `helm uninstall kueue`; a release that is not there is fine (returns false).
pub async fn helm_uninstall(helm: &PathBuf, context: Option<&str>) -> Result<bool, HelmError> {
    let mut args: Vec<String> = vec![
        "uninstall".into(),
        KUEUE_RELEASE.into(),
        format!("--namespace={KUEUE_NAMESPACE}"),
    ];
    args.extend(context_arg(context));
    match run_helm(helm, &args).await {
        Ok(_) => Ok(true),
        Err(HelmError(m)) if m.contains("not found") => Ok(false),
        Err(e) => Err(e),
    }
}

fn kueue_resource(kind: &str) -> ApiResource {
    let (group, version) = KUEUE_API
        .split_once('/')
        .unwrap_or(("kueue.x-k8s.io", "v1beta2"));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// The Workload API of `namespace` (all namespaces with `None`).
pub fn workloads(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = kueue_resource("Workload");
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// The ClusterQueue API.
pub fn cluster_queues(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &kueue_resource("ClusterQueue"))
}

/// The LocalQueue API of `namespace`.
pub fn local_queues(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kueue_resource("LocalQueue"))
}

/// Whether Kueue's admission webhooks answer: a dry-run create of a LocalQueue goes through
/// them on a real cluster (a webhook whose service has no endpoints yet fails it with
/// `failed calling webhook`). `Ok(None)` = ready; `Ok(Some(reason))` = not yet.
pub async fn webhook_ready(
    client: &Client,
    namespace: &str,
) -> Result<Option<String>, kube::Error> {
    let probe: DynamicObject = serde_json::from_value(json!({
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": "vast-webhook-probe", "namespace": namespace},
        "spec": {"clusterQueue": CLUSTER_QUEUE},
    }))
    .map_err(kube::Error::SerdeError)?;
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match local_queues(client, namespace).create(&pp, &probe).await {
        Ok(_) => Ok(None),
        Err(e) if super::error::is_already_exists(&e) => Ok(None),
        Err(kube::Error::Api(s)) if s.message.contains("webhook") => Ok(Some(s.message.clone())),
        Err(e) => Err(e),
    }
}

/// The ClusterQueue's `spec.stopPolicy` (`None` when unset or the queue is missing).
pub async fn stop_policy(client: &Client) -> Result<Option<String>, kube::Error> {
    Ok(cluster_queues(client)
        .get_opt(CLUSTER_QUEUE)
        .await?
        .and_then(|cq| {
            cq.data
                .pointer("/spec/stopPolicy")
                .and_then(|v| v.as_str())
                .map(String::from)
        })
        .filter(|p| p != "None"))
}

/// Sets the ClusterQueue's `spec.stopPolicy` (`None` = the string `"None"`). A missing queue
/// is fine (returns false).
pub async fn set_stop_policy(client: &Client, policy: Option<&str>) -> Result<bool, kube::Error> {
    let patch = json!({"spec": {"stopPolicy": policy.unwrap_or("None")}});
    match cluster_queues(client)
        .patch(
            CLUSTER_QUEUE,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if super::error::is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Kueue's view of pending Jobs: Job UID → (reason, position in its ClusterQueue).
pub async fn pending_reasons(
    client: &Client,
    namespace: &str,
) -> std::collections::BTreeMap<String, (Option<String>, Option<usize>)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(list) = workloads(client, Some(namespace))
        .list(&kube::api::ListParams::default())
        .await
    else {
        return out;
    };
    let mut pending: Vec<(String, String, String)> = Vec::new();
    for w in &list.items {
        let status = w.data.get("status");
        let conds = status
            .and_then(|s| s.get("conditions"))
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default();
        let cond = |t: &str| {
            conds
                .iter()
                .find(|c| c.get("type").and_then(|x| x.as_str()) == Some(t))
        };
        let admitted = cond("Admitted")
            .is_some_and(|c| c.get("status").and_then(|s| s.as_str()) == Some("True"));
        let finished = cond("Finished")
            .is_some_and(|c| c.get("status").and_then(|s| s.as_str()) == Some("True"));
        if admitted || finished {
            continue;
        }
        let reason = cond("QuotaReserved")
            .or_else(|| cond("Admitted"))
            .and_then(|c| c.get("message").and_then(|m| m.as_str()))
            .map(String::from);
        let created = w
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        for o in w.metadata.owner_references.iter().flatten() {
            if o.kind == "Job" {
                pending.push((
                    created.clone(),
                    o.uid.clone(),
                    reason.clone().unwrap_or_default(),
                ));
            }
        }
    }
    pending.sort();
    for (i, (_, uid, reason)) in pending.into_iter().enumerate() {
        let reason = Some(reason).filter(|r| !r.is_empty());
        out.insert(uid, (reason, Some(i + 1)));
    }
    out
}
