//! Generic object access: server-side apply with field manager `vast` of manifests rendered
//! as JSON (`serde_json::Value`, resolved to their resource by [`ObjectRef`]), and the
//! tolerant deletes and finalizer stripping every cluster step uses, for typed and dynamic
//! `Api`s alike ([`delete_named`], [`strip_finalizers_named`], [`delete_now`]).

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::Client;
use serde_json::Value;

/// The field manager of every object vast applies.
pub const FIELD_MANAGER: &str = "vast";

/// Kinds without a namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "StorageClass",
    "CustomResourceDefinition",
    "ResourceFlavor",
    "ClusterQueue",
    "PersistentVolume",
];

/// What identifies an object of a rendered manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A rendered object that cannot be applied (a bug in a template, not a server answer).
#[derive(Debug, thiserror::Error)]
#[error("object {what} is missing {field}")]
pub struct BadObject {
    what: String,
    field: &'static str,
}

impl ObjectRef {
    /// Reads apiVersion, kind, name and namespace (`default_ns` for namespaced kinds without one).
    pub fn of(obj: &Value, default_ns: &str) -> Result<ObjectRef, BadObject> {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).map(String::from);
        let what = s("/metadata/name").unwrap_or_else(|| "(unnamed)".into());
        let missing = |field| BadObject {
            what: what.clone(),
            field,
        };
        let api_version = s("/apiVersion").ok_or_else(|| missing("apiVersion"))?;
        let kind = s("/kind").ok_or_else(|| missing("kind"))?;
        let name = s("/metadata/name").ok_or_else(|| missing("metadata.name"))?;
        let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
            None
        } else {
            Some(s("/metadata/namespace").unwrap_or_else(|| default_ns.to_string()))
        };
        Ok(ObjectRef {
            api_version,
            kind,
            name,
            namespace,
        })
    }

    fn resource(&self) -> ApiResource {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        };
        ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &self.kind))
    }

    /// The dynamic API for this object's kind and namespace.
    pub fn api(&self, client: &Client) -> Api<DynamicObject> {
        let ar = self.resource();
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        }
    }
}

/// Server-side applies `obj` (field manager `vast`, `force` taking over conflicting fields).
/// Applying an unchanged object is a no-op, so this is idempotent.
pub async fn apply(
    client: &Client,
    obj: &Value,
    default_ns: &str,
) -> Result<ObjectRef, ApplyError> {
    let r = ObjectRef::of(obj, default_ns)?;
    let mut body = obj.clone();
    if let (Some(ns), Some(meta)) = (&r.namespace, body.get_mut("metadata")) {
        meta["namespace"] = Value::String(ns.clone());
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    r.api(client)
        .patch(&r.name, &pp, &Patch::Apply(&body))
        .await
        .map_err(|source| ApplyError::Api {
            object: r.to_string(),
            source,
        })?;
    Ok(r)
}

/// A failed apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Bad(#[from] BadObject),
    #[error("applying {object} failed: {}", super::error::message(source))]
    Api {
        object: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    pub fn kube(&self) -> Option<&kube::Error> {
        match self {
            ApplyError::Api { source, .. } => Some(source),
            ApplyError::Bad(_) => None,
        }
    }
}

/// Delete options vast uses everywhere: no grace period, background propagation (dependents
/// follow by garbage collection).
/// POSTs `object` to `collection_url` (e.g. `/apis/batch/v1/namespaces/ns/jobs`) and reads
/// nothing of the answer but its status: creating thousands of objects needs neither the typed
/// round trip nor the parsed echo. Errors are kube's (`Error::Api` carries the server's
/// `Status`, so a 409 is recognised as for a typed create).
pub async fn create_raw(
    client: &Client,
    collection_url: &str,
    object: &Value,
) -> Result<(), kube::Error> {
    let body = serde_json::to_vec(object).map_err(kube::Error::SerdeError)?;
    let req = http::Request::post(collection_url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    client.request_text(req).await.map(|_| ())
}

pub fn delete_now() -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..Default::default()
    }
}

/// Deletes `name` through `api` ([`delete_now`]); an object that is already gone is fine.
/// Returns whether something was deleted.
pub async fn delete_named<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &delete_now()).await {
        Ok(_) => Ok(true),
        Err(e) if super::error::is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes every finalizer of `name` through `api` (404 is fine).
pub async fn strip_finalizers_named<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({"metadata": {"finalizers": null}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if super::error::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the object ([`delete_named`]).
pub async fn delete(client: &Client, r: &ObjectRef) -> Result<bool, kube::Error> {
    delete_named(&r.api(client), &r.name).await
}

/// Removes every finalizer of the object ([`strip_finalizers_named`]).
pub async fn strip_finalizers(client: &Client, r: &ObjectRef) -> Result<(), kube::Error> {
    strip_finalizers_named(&r.api(client), &r.name).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scope_and_namespace() {
        let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "s"}});
        assert_eq!(ObjectRef::of(&sc, "ns").unwrap().namespace, None);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let r = ObjectRef::of(&pod, "ns").unwrap();
        assert_eq!(r.namespace.as_deref(), Some("ns"));
        assert_eq!(r.to_string(), "Pod ns/p");
        let bad = json!({"kind": "Pod", "metadata": {"name": "p"}});
        assert!(ObjectRef::of(&bad, "ns")
            .unwrap_err()
            .to_string()
            .contains("apiVersion"));
    }
}
