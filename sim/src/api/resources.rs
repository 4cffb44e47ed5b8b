//! The resource registry: which group/version/resource the sim serves (built-in kinds plus
//! every established CustomResourceDefinition), and the discovery and OpenAPI documents
//! derived from it.

use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

/// One served resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub status: bool,
    pub short_names: Vec<String>,
    /// Store key: `group/plural`.
    pub key: Arc<str>,
}

impl ResourceType {
    fn new(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: bool,
        short: &[&str],
    ) -> Self {
        ResourceType {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            status,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            key: Arc::from(format!("{group}/{plural}")),
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn preferred_api_version(&self) -> String {
        self.api_version(self.versions.first().map(String::as_str).unwrap_or("v1"))
    }

    /// Base path of a group version: `/api/v1` or `/apis/{group}/{version}`.
    pub fn gv_path(group: &str, version: &str) -> String {
        if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        }
    }
}

/// Served resources; CRDs add to it at runtime.
pub struct Registry {
    types: RwLock<Vec<Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let t = ResourceType::new;
        let builtin = vec![
            t("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
            t("", "v1", "nodes", "Node", false, true, &["no"]),
            t("", "v1", "pods", "Pod", true, true, &["po"]),
            t("", "v1", "services", "Service", true, true, &["svc"]),
            t("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
            t("", "v1", "secrets", "Secret", true, false, &[]),
            t(
                "",
                "v1",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                true,
                true,
                &["pvc"],
            ),
            t("", "v1", "events", "Event", true, false, &["ev"]),
            t(
                "",
                "v1",
                "serviceaccounts",
                "ServiceAccount",
                true,
                false,
                &["sa"],
            ),
            t(
                "storage.k8s.io",
                "v1",
                "storageclasses",
                "StorageClass",
                false,
                false,
                &["sc"],
            ),
            t("batch", "v1", "jobs", "Job", true, true, &[]),
            t(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                true,
                &["crd", "crds"],
            ),
        ];
        Registry {
            types: RwLock::new(builtin.into_iter().map(Arc::new).collect()),
        }
    }

    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.types.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.all().into_iter().find(|t| {
            t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version)
        })
    }

    pub fn by_key(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.all().into_iter().find(|t| &*t.key == key)
    }

    /// Registers (or re-registers) the resource of a CRD object.
    pub fn register_crd(&self, crd: &Value) -> Option<Arc<ResourceType>> {
        let spec = crd.get("spec")?;
        let group = spec.get("group")?.as_str()?;
        let names = spec.get("names")?;
        let plural = names.get("plural")?.as_str()?;
        let kind = names.get("kind")?.as_str()?;
        let singular = names
            .get("singular")
            .and_then(Value::as_str)
            .unwrap_or(&kind.to_lowercase())
            .to_string();
        let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
        let versions: Vec<&Value> = spec
            .get("versions")?
            .as_array()?
            .iter()
            .filter(|v| v.get("served") != Some(&json!(false)))
            .collect();
        // storage version first, so it is the preferred one
        let mut ordered: Vec<String> = Vec::new();
        for v in &versions {
            if v.get("storage") == Some(&json!(true)) {
                ordered.extend(v.get("name").and_then(Value::as_str).map(str::to_string));
            }
        }
        for v in &versions {
            if let Some(n) = v.get("name").and_then(Value::as_str) {
                if !ordered.iter().any(|o| o == n) {
                    ordered.push(n.to_string());
                }
            }
        }
        let status = versions
            .iter()
            .any(|v| v.pointer("/subresources/status").is_some());
        let short_names = names
            .get("shortNames")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let rt = Arc::new(ResourceType {
            group: group.into(),
            versions: ordered,
            plural: plural.into(),
            singular,
            kind: kind.into(),
            namespaced,
            status,
            short_names,
            key: Arc::from(format!("{group}/{plural}")),
        });
        let mut types = self.types.write().unwrap_or_else(|e| e.into_inner());
        types.retain(|t| t.key != rt.key);
        types.push(rt.clone());
        Some(rt)
    }

    pub fn unregister(&self, key: &str) {
        self.types
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| &*t.key != key);
    }

    /// Group versions served, core first: (group, version).
    fn group_versions(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.all() {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) => {
                    for v in &t.versions {
                        if !vs.contains(v) {
                            vs.push(v.clone());
                        }
                    }
                }
                None => out.push((t.group.clone(), t.versions.clone())),
            }
        }
        out
    }

    /// `GET /apis`: APIGroupList.
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .group_versions()
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, vs)| group_doc(&g, &vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/{group}`: APIGroup.
    pub fn api_group(&self, group: &str) -> Option<Value> {
        let (g, vs) = self
            .group_versions()
            .into_iter()
            .find(|(g, _)| g == group && !g.is_empty())?;
        let mut doc = group_doc(&g, &vs);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `GET /api/v1`, `GET /apis/{g}/{v}`: APIResourceList.
    pub fn api_resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let types: Vec<Arc<ResourceType>> = self
            .all()
            .into_iter()
            .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
            .collect();
        if types.is_empty() {
            return None;
        }
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut resources = Vec::new();
        for t in &types {
            resources.push(json!({
                "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind,
                "verbs": verbs, "shortNames": t.short_names,
            }));
            if t.status {
                resources.push(json!({
                    "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": ["get", "patch", "update"],
                }));
            }
            if t.plural == "pods" && t.group.is_empty() {
                for sub in ["exec", "portforward"] {
                    resources.push(json!({
                        "name": format!("pods/{sub}"), "singularName": "", "namespaced": true,
                        "kind": if sub == "exec" { "PodExecOptions" } else { "PodPortForwardOptions" },
                        "verbs": ["create", "get"],
                    }));
                }
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        )
    }

    /// `GET /openapi/v3`: the index of per-group-version documents.
    pub fn openapi_v3_index(&self) -> Value {
        let mut paths = serde_json::Map::new();
        for (g, vs) in self.group_versions() {
            for v in vs {
                let p = ResourceType::gv_path(&g, &v);
                let rel = p.trim_start_matches('/').to_string();
                paths.insert(
                    rel,
                    json!({"serverRelativeURL": format!("/openapi/v3{p}?hash=vast-sim")}),
                );
            }
        }
        json!({"paths": paths})
    }

    /// `GET /openapi/v3/{api/v1 | apis/g/v}`: enough OpenAPI for kubectl to see that the server
    /// validates fields itself (`fieldValidation` on every PATCH), with no schemas.
    pub fn openapi_v3_doc(&self, group: &str, version: &str) -> Option<Value> {
        let mut paths = serde_json::Map::new();
        for t in self
            .all()
            .into_iter()
            .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        {
            let base = ResourceType::gv_path(group, version);
            let path = if t.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
            } else {
                format!("{base}/{}/{{name}}", t.plural)
            };
            let op = json!({
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": t.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "OK"}},
            });
            paths.insert(path, json!({"patch": op.clone(), "get": op}));
        }
        if paths.is_empty() {
            return None;
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (vast-sim)", "version": "v1.33.0"},
            "paths": paths,
            "components": {"schemas": {}},
        }))
    }
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// The Kueue CRDs registered at start (`kueue.x-k8s.io/v1beta2`), as on a cluster with Kueue.
pub fn kueue_crds() -> Vec<Value> {
    let crd = |plural: &str, kind: &str, scope: &str, short: &[&str]| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.kueue.x-k8s.io")},
            "spec": {
                "group": "kueue.x-k8s.io",
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List"), "shortNames": short},
                "scope": scope,
                "versions": [
                    {"name": "v1beta2", "served": true, "storage": true, "subresources": {"status": {}},
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    {"name": "v1beta1", "served": true, "storage": false, "subresources": {"status": {}},
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
                ]
            }
        })
    };
    vec![
        crd(
            "resourceflavors",
            "ResourceFlavor",
            "Cluster",
            &["flavor", "flavors", "rf"],
        ),
        crd("clusterqueues", "ClusterQueue", "Cluster", &["cq"]),
        crd(
            "localqueues",
            "LocalQueue",
            "Namespaced",
            &["queue", "queues", "lq"],
        ),
        crd("workloads", "Workload", "Namespaced", &["wl"]),
    ]
}

/// Status conditions of an established CRD.
pub fn crd_established_status(crd: &Value, now: &str) -> Value {
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array)
            .map(|vs| vs.iter().filter(|v| v.get("storage") == Some(&json!(true))).filter_map(|v| v.get("name").cloned()).collect::<Vec<_>>())
            .unwrap_or_default(),
    })
}
