//! The `setup` operation's steps (`workflows/setup.yaml`): cluster access, Kueue (present,
//! or installed with helm), its CRDs and webhook ready, namespace and S3 credentials Secret,
//! the queues with the quota computed from the cluster, the cluster config's objects applied
//! with server-side apply, the robovast pod Ready, and the saved setup written.
//!
//! Parameters: `context`, `namespace`, `cluster_config`, `options` (map), `force`,
//! `project_dir`, `setup_key` (the context key of the saved setup file). No secret is ever a
//! parameter or an output: the MinIO keys are generated inside `setup.credentials` and live
//! only in the Secret.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};

use super::base::{apply_err, env, kube_err, register_steps, sleep, ROBOVAST_POD};
use crate::cluster::{kueue, objects};
use crate::engine::{Registry, StepContext, StepError};
use crate::manifests::cluster_config::{cluster_config, S3_SECRET};
use crate::manifests::kueue::{compute_quota, queue_objects};
use crate::manifests::{MANAGED_BY, MANAGED_BY_LABEL};

pub fn register(r: &mut Registry) {
    register_steps!(r;
        "setup.access" => access,
        "setup.kueue" => kueue_install,
        "setup.kueue-ready" => kueue_ready,
        "setup.credentials" => credentials,
        "setup.queues" => queues,
        "setup.robovast" => robovast,
        "setup.wait-pod" => wait_pod,
        "setup.save" => save,
    );
}

/// Server version and one pod listed in the namespace.
pub async fn access(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let v = e
        .client
        .apiserver_version()
        .await
        .map_err(|err| kube_err("cannot reach the Kubernetes API", &err))?;
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), &e.namespace);
    pods.list(&ListParams::default().limit(1))
        .await
        .map_err(|err| {
            kube_err(
                format!("cannot list pods in namespace '{}'", e.namespace),
                &err,
            )
        })?;
    Ok(json!({"version": format!("{}.{}", v.major, v.minor)}))
}

async fn kueue_install(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let missing = kueue::missing_crds(&e.client)
        .await
        .map_err(|err| kube_err("cannot read Kueue's CRDs", &err))?;
    let helm = kueue::helm();
    let context = e.context.as_deref();
    let release = match &helm {
        Some(h) => kueue::helm_release_exists(h, context)
            .await
            .map_err(|err| StepError::transient(err.to_string()))?,
        None => false,
    };
    match (helm, release, missing.is_empty()) {
        // Our own release: upgrade it so the pinned version and values hold.
        (Some(h), true, _) => {
            tracing::info!(
                "Upgrading Kueue (helm release '{}')...",
                crate::manifests::kueue::KUEUE_RELEASE
            );
            let done = kueue::helm_install(&h, context, true)
                .await
                .map_err(|err| StepError::transient(err.to_string()))?;
            Ok(json!({"kueue": done}))
        }
        (_, _, true) => {
            tracing::info!(
                "Kueue is already installed (its CRDs are present): installation skipped."
            );
            Ok(json!({"kueue": "present"}))
        }
        (Some(h), false, false) => {
            tracing::info!(
                "Installing Kueue {} with helm...",
                crate::manifests::kueue::KUEUE_VERSION
            );
            let done = kueue::helm_install(&h, context, false)
                .await
                .map_err(|err| StepError::transient(err.to_string()))?;
            Ok(json!({"kueue": done}))
        }
        (None, _, false) => Err(StepError::permanent(format!(
            "Kueue is not installed (missing CRDs: {}) and helm is not on PATH. Install helm \
             (https://helm.sh/docs/intro/install/) and run setup again, or install Kueue {v} \
             yourself: kubectl apply --server-side -f \
             https://github.com/kubernetes-sigs/kueue/releases/download/v{v}/manifests.yaml",
            missing.join(", "),
            v = crate::manifests::kueue::KUEUE_VERSION
        ))),
    }
}

/// Kueue's CRDs established and its webhook answering (transient until both hold).
async fn kueue_ready(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let missing = kueue::missing_crds(&e.client)
        .await
        .map_err(|err| kube_err("cannot read Kueue's CRDs", &err))?;
    if !missing.is_empty() {
        return Err(StepError::transient(format!(
            "Kueue's CRDs are not established yet: {}",
            missing.join(", ")
        )));
    }
    match kueue::webhook_ready(&e.client, &e.namespace).await {
        Ok(None) => Ok(json!({"ready": true})),
        Ok(Some(reason)) => Err(StepError::transient(format!(
            "Kueue's webhook does not answer yet: {reason}"
        ))),
        Err(err) => Err(kube_err("probing Kueue's webhook", &err)),
    }
}

fn random_token(n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The namespace (applied) and the Secret `vast-s3-credentials` with generated keys, created
/// only when missing: an existing Secret keeps its keys (MinIO already uses them).
async fn credentials(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": e.namespace}});
    let nsr = objects::ObjectRef::of(&ns, &e.namespace)
        .map_err(|err| StepError::permanent(err.to_string()))?;
    match nsr.api(&e.client).get_opt(&e.namespace).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            objects::apply(&e.client, &ns, &e.namespace)
                .await
                .map_err(|err| apply_err(&err))?;
        }
        Err(err) => {
            return Err(kube_err(
                format!("cannot read namespace '{}'", e.namespace),
                &err,
            ))
        }
    }
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), &e.namespace);
    let existing = secrets
        .get_opt(S3_SECRET)
        .await
        .map_err(|err| kube_err(format!("cannot read Secret '{S3_SECRET}'"), &err))?;
    if existing.is_some() {
        return Ok(json!({"secret": S3_SECRET, "created": false}));
    }
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_SECRET, "namespace": e.namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        "type": "Opaque",
        "stringData": {
            "access-key": format!("vast-{}", random_token(12)),
            "secret-key": random_token(40),
        },
    }))
    .map_err(|err| StepError::permanent(err.to_string()))?;
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(json!({"secret": S3_SECRET, "created": true})),
        Err(err) if crate::cluster::error::is_already_exists(&err) => {
            Ok(json!({"secret": S3_SECRET, "created": false}))
        }
        Err(err) => Err(kube_err(format!("creating Secret '{S3_SECRET}'"), &err)),
    }
}

/// ResourceFlavor, ClusterQueue and LocalQueue with the quota computed from the cluster's nodes
/// and pods (upstream's arithmetic; the defaults with a warning when nothing is available).
async fn queues(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let nodes = Api::<Node>::all(e.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|err| kube_err("cannot list nodes", &err))?;
    let pods = Api::<Pod>::all(e.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|err| kube_err("cannot list pods", &err))?;
    let q = compute_quota(&nodes.items, &pods.items);
    if q.defaulted {
        tracing::warn!("{}", q.message);
    } else {
        tracing::info!("{}", q.message);
    }
    for o in queue_objects(&e.namespace, q.quota) {
        objects::apply(&e.client, &o, &e.namespace)
            .await
            .map_err(|err| apply_err(&err))?;
    }
    Ok(json!({"cpu": q.quota.cpu, "memory": format!("{}Gi", q.quota.memory_gi)}))
}

fn cluster_objects(cx: &StepContext, namespace: &str) -> Result<Vec<Value>, StepError> {
    let name: String = cx
        .param("cluster_config")?
        .ok_or_else(|| StepError::permanent("parameter 'cluster_config' is missing"))?;
    let options: BTreeMap<String, String> = cx.param("options")?.unwrap_or_default();
    let cfg = cluster_config(&name).map_err(|e| StepError::permanent(e.to_string()))?;
    cfg.render(&options, namespace)
        .map_err(|e| StepError::permanent(e.to_string()))
}

/// The cluster config's objects, applied in document order with server-side apply (an
/// unchanged object is a no-op). With `force`, an existing robovast pod is deleted first
/// (once per run: the cursor remembers it), so it is really re-created.
async fn robovast(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let objs = cluster_objects(cx, &e.namespace)?;
    let force: bool = cx.param("force")?.unwrap_or(false);
    let recreated: bool = cx.cursor()?.unwrap_or(false);
    if force && !recreated {
        let pods: Api<Pod> = Api::namespaced(e.client.clone(), &e.namespace);
        let pod_ref = objects::ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: ROBOVAST_POD.into(),
            namespace: Some(e.namespace.clone()),
        };
        if objects::delete(&e.client, &pod_ref)
            .await
            .map_err(|err| kube_err("deleting pod 'robovast'", &err))?
        {
            tracing::info!("--force: deleted pod '{ROBOVAST_POD}' to re-create it");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while pods
                .get_opt(ROBOVAST_POD)
                .await
                .map_err(|err| kube_err("reading pod 'robovast'", &err))?
                .is_some()
            {
                if tokio::time::Instant::now() > deadline {
                    return Err(StepError::transient("pod 'robovast' is still terminating"));
                }
                sleep(cx, Duration::from_millis(200)).await?;
            }
        }
        cx.save_cursor(&true)?;
    }
    let mut applied = Vec::new();
    // The archiver's scripts first, so the pod mounts them when it starts.
    let scripts = crate::pod::configmap(&crate::pod::scripts(&[]));
    for o in std::iter::once(&scripts).chain(&objs) {
        let r = objects::apply(&e.client, o, &e.namespace)
            .await
            .map_err(|err| apply_err(&err))?;
        applied.push(r.to_string());
    }
    Ok(json!({"applied": applied}))
}

/// Waits (up to `pod_timeout_s`, default 300 s) until the robovast pod is Ready.
async fn wait_pod(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let limit = Duration::from_secs(cx.param::<u64>("pod_timeout_s")?.unwrap_or(300));
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), &e.namespace);
    let deadline = tokio::time::Instant::now() + limit;
    let mut told = false;
    loop {
        let pod = pods
            .get_opt(ROBOVAST_POD)
            .await
            .map_err(|err| kube_err("reading pod 'robovast'", &err))?;
        let state = pod.as_ref().map(pod_summary);
        if let Some((true, _)) = state {
            return Ok(json!({"ready": true}));
        }
        let why = state
            .map(|(_, s)| s)
            .unwrap_or_else(|| "does not exist".to_string());
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError::transient(format!(
                "pod '{ROBOVAST_POD}' in namespace '{}' is not Ready after {} s: {why}",
                e.namespace,
                limit.as_secs()
            )));
        }
        if !told {
            tracing::info!("Waiting for pod '{ROBOVAST_POD}' to be ready ({why})...");
            told = true;
        }
        sleep(cx, Duration::from_millis(250)).await?;
    }
}

/// (Ready, description) of a pod: phase and the first waiting container's reason.
pub fn pod_summary(p: &Pod) -> (bool, String) {
    let Some(s) = &p.status else {
        return (false, "no status yet".into());
    };
    let ready = s
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let phase = s.phase.clone().unwrap_or_else(|| "Unknown".into());
    let waiting = s.container_statuses.iter().flatten().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        Some(format!(
            "container {} waiting: {}",
            c.name,
            w.reason.clone().unwrap_or_default()
        ))
    });
    (
        ready,
        match waiting {
            Some(w) => format!("{phase}, {w}"),
            None => phase,
        },
    )
}

/// Writes the saved setup (`.robovast_cluster_config[.<ctx>]` next to the project file).
async fn save(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let dir: String = cx
        .param("project_dir")?
        .ok_or_else(|| StepError::permanent("parameter 'project_dir' is missing"))?;
    let key: Option<String> = cx.param("setup_key")?;
    let name: String = cx
        .param("cluster_config")?
        .ok_or_else(|| StepError::permanent("parameter 'cluster_config' is missing"))?;
    let mut kwargs: BTreeMap<String, String> = cx.param("options")?.unwrap_or_default();
    kwargs.insert("namespace".into(), e.namespace.clone());
    let setup = crate::project::files::ClusterSetup { name, kwargs };
    let path =
        crate::project::files::write_setup(std::path::Path::new(&dir), key.as_deref(), &setup)
            .map_err(|err| StepError::permanent(err.to_string()))?;
    Ok(json!({"file": path.display().to_string()}))
}
