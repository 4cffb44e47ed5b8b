//! The resource registry: which group/version/resource the sim serves (built-in kinds plus
//! every established CustomResourceDefinition), and the discovery and OpenAPI documents
//! derived from it.

use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

/// The verbs of a stored resource.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

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
    /// Served for a CustomResourceDefinition (no strategic merge patch, no protobuf).
    pub custom: bool,
    /// Discovery categories (`all` for the kinds `kubectl get all` shows).
    pub categories: Vec<String>,
    /// Verbs in discovery.
    pub verbs: &'static [&'static str],
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
            custom: false,
            categories: Vec::new(),
            verbs: ALL_VERBS,
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
            t("", "v1", "endpoints", "Endpoints", true, false, &["ep"]),
            t(
                "coordination.k8s.io",
                "v1",
                "leases",
                "Lease",
                true,
                false,
                &[],
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
        let mut builtin = builtin;
        for rt in builtin.iter_mut() {
            if matches!(&*rt.key, "/pods" | "/services" | "batch/jobs") {
                rt.categories = vec!["all".into()];
            }
        }
        // answered at once, never stored (`kubectl auth can-i`)
        let mut review = t(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            false,
            &[],
        );
        review.verbs = &["create"];
        builtin.push(review);
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
            custom: true,
            verbs: ALL_VERBS,
            categories: names
                .get("categories")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
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
        let mut resources = Vec::new();
        for t in &types {
            let mut r = json!({
                "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind,
                "verbs": t.verbs, "shortNames": t.short_names,
            });
            if !t.categories.is_empty() {
                r["categories"] = json!(t.categories);
            }
            resources.push(r);
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
    /// validates fields itself (`fieldValidation` on every PATCH), and each kind's top-level
    /// schema (its fields, `metadata` in full) for `kubectl explain`. The PATCH operations
    /// declare no request content types, so `kubectl apply` takes its strategic merge keys
    /// from its own compiled-in types, not from these shallow schemas.
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
        let mut schemas = serde_json::Map::new();
        schemas.insert(OBJECT_META.into(), object_meta_schema());
        for t in self
            .all()
            .into_iter()
            .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        {
            let prefix = if group.is_empty() { "core" } else { group };
            schemas.insert(
                format!("{prefix}.{version}.{}", t.kind),
                kind_schema(&t, version),
            );
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (vast-sim)", "version": "v1.33.0"},
            "paths": paths,
            "components": {"schemas": schemas},
        }))
    }
}

/// Schema name of `ObjectMeta` in the OpenAPI documents.
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn field(ty: &str, description: &str) -> Value {
    match ty {
        "map" => {
            json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": description})
        }
        "array" => {
            json!({"type": "array", "items": {"type": "object"}, "description": description})
        }
        "strings" => {
            json!({"type": "array", "items": {"type": "string", "default": ""}, "description": description})
        }
        "object" => {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "description": description})
        }
        t => json!({"type": t, "description": description}),
    }
}

fn object_meta_schema() -> Value {
    let props = [
        ("name", "string", "Name must be unique within a namespace."),
        ("generateName", "string", "An optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
        ("namespace", "string", "Namespace defines the space within which each name must be unique."),
        ("uid", "string", "UID is the unique in time and space value for this object."),
        ("resourceVersion", "string", "An opaque value that represents the internal version of this object."),
        ("generation", "integer", "A sequence number representing a specific generation of the desired state."),
        ("creationTimestamp", "string", "CreationTimestamp is a timestamp representing the server time when this object was created."),
        ("deletionTimestamp", "string", "DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
        ("labels", "map", "Map of string keys and values that can be used to organize and categorize (scope and select) objects."),
        ("annotations", "map", "Annotations is an unstructured key value map stored with a resource that may be set by external tools to store and retrieve arbitrary metadata."),
        ("finalizers", "strings", "Must be empty before the object is deleted from the registry."),
        ("ownerReferences", "array", "List of objects depended by this object."),
        ("managedFields", "array", "ManagedFields maps workflow-id and version to the set of fields that are managed by that workflow."),
    ];
    let properties: serde_json::Map<String, Value> = props
        .iter()
        .map(|(n, t, d)| (n.to_string(), field(t, d)))
        .collect();
    json!({
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "type": "object",
        "properties": properties,
    })
}

/// A kind's top-level schema: `apiVersion`, `kind`, `metadata`, and its own fields.
fn kind_schema(t: &ResourceType, version: &str) -> Value {
    let own: &[(&str, &str, &str)] = match (t.group.as_str(), t.plural.as_str()) {
        ("", "configmaps") => &[
            ("data", "map", "Data contains the configuration data."),
            ("binaryData", "map", "BinaryData contains the binary data."),
            ("immutable", "boolean", "Immutable, if set to true, ensures that data stored in the ConfigMap cannot be updated."),
        ],
        ("", "secrets") => &[
            ("data", "map", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string."),
            ("stringData", "map", "stringData allows specifying non-binary secret data in string form."),
            ("type", "string", "Used to facilitate programmatic handling of secret data."),
            ("immutable", "boolean", "Immutable, if set to true, ensures that data stored in the Secret cannot be updated."),
        ],
        ("", "serviceaccounts") => &[
            ("automountServiceAccountToken", "boolean", "AutomountServiceAccountToken indicates whether pods running as this service account should have an API token automatically mounted."),
            ("imagePullSecrets", "array", "ImagePullSecrets is a list of references to secrets in the same namespace to use for pulling any images in pods that reference this ServiceAccount."),
            ("secrets", "array", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
        ],
        ("", "events") => &[
            ("involvedObject", "object", "The object that this event is about."),
            ("reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            ("message", "string", "A human-readable description of the status of this operation."),
            ("type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
            ("count", "integer", "The number of times this event has occurred."),
            ("firstTimestamp", "string", "The time at which the event was first recorded."),
            ("lastTimestamp", "string", "The time at which the most recent occurrence of this event was recorded."),
            ("source", "object", "The component reporting this event."),
        ],
        ("", "endpoints") => &[(
            "subsets",
            "array",
            "The set of all endpoints is the union of all subsets.",
        )],
        ("storage.k8s.io", "storageclasses") => &[
            ("provisioner", "string", "provisioner indicates the type of the provisioner."),
            ("parameters", "map", "parameters holds the parameters for the provisioner that should create volumes of this storage class."),
            ("reclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
            ("volumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
        ],
        _ => &[],
    };
    let mut properties = serde_json::Map::new();
    properties.insert(
        "apiVersion".into(),
        field(
            "string",
            "APIVersion defines the versioned schema of this representation of an object.",
        ),
    );
    properties.insert(
        "kind".into(),
        field(
            "string",
            "Kind is a string value representing the REST resource this object represents.",
        ),
    );
    properties.insert(
        "metadata".into(),
        json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "default": {},
               "description": "Standard object's metadata."}),
    );
    for (n, ty, d) in own {
        properties.insert(n.to_string(), field(ty, d));
    }
    if own.is_empty() && !matches!(t.plural.as_str(), "selfsubjectaccessreviews") {
        properties.insert(
            "spec".into(),
            field("object", &format!("Spec of the {}.", t.kind)),
        );
    }
    if t.status {
        properties.insert(
            "status".into(),
            field(
                "object",
                &format!("Most recently observed status of the {}.", t.kind),
            ),
        );
    }
    if t.plural == "selfsubjectaccessreviews" {
        properties.insert(
            "spec".into(),
            field(
                "object",
                "Spec holds information about the request being evaluated.",
            ),
        );
        properties.insert("status".into(), field("object", "Status is filled in by the server and indicates whether the request is allowed or not"));
    }
    json!({
        "description": format!("{} (vast-sim serves the top-level fields of each kind; nested fields are not described).", t.kind),
        "type": "object",
        "properties": properties,
        "x-kubernetes-group-version-kind": [{"group": t.group, "kind": t.kind, "version": version}],
    })
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
