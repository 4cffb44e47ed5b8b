//! Resolution of a pod against the store, as a kubelet does before starting containers: env
//! values and references (`secretKeyRef`, `configMapKeyRef`, `fieldRef`, `resourceFieldRef`,
//! `envFrom`, `$(VAR)` expansion), volumes and mounts. Produces the data plane's
//! [`ResolvedPod`], and the service resolver (cluster host name -> pod name).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use serde_json::Value;

use crate::dataplane::ServiceResolver;
use crate::pod::{ResolvedContainer, ResolvedMount, ResolvedPod, ResolvedVolume};
use crate::selector::LabelSelector;
use crate::store::{self, keys, Store};

/// Why a pod cannot start (the kubelet's `CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} \"{name}\" not found (referenced by pod {pod})")]
    MissingObject {
        kind: &'static str,
        name: String,
        pod: String,
    },
    #[error("couldn't find key {key} in {kind} {namespace}/{name} (referenced by pod {pod})")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
        pod: String,
    },
    #[error("unsupported fieldRef {path:?} in pod {pod}")]
    FieldRef { path: String, pod: String },
}

fn str_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `data` of a ConfigMap (plus `binaryData`) or a Secret, decoded to bytes.
fn object_files(obj: &Value, secret: bool) -> BTreeMap<String, Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = BTreeMap::new();
    for (k, v) in str_map(obj.get("data")) {
        let bytes = if secret {
            b64.decode(v.as_bytes()).unwrap_or_default()
        } else {
            v.into_bytes()
        };
        out.insert(k, bytes);
    }
    for (k, v) in str_map(obj.get("binaryData")) {
        out.insert(k, b64.decode(v.as_bytes()).unwrap_or_default());
    }
    out
}

struct Ctx<'a> {
    store: &'a Store,
    pod: &'a Value,
    ns: &'a str,
    pod_name: &'a str,
}

impl Ctx<'_> {
    fn lookup(
        &self,
        kind: &'static str,
        key: &str,
        name: &str,
        optional: bool,
    ) -> Result<Option<Arc<Value>>, Error> {
        match self.store.get(key, self.ns, name) {
            Some(o) => Ok(Some(o)),
            None if optional => Ok(None),
            None => Err(Error::MissingObject {
                kind,
                name: name.into(),
                pod: self.pod_name.into(),
            }),
        }
    }

    fn key_ref(&self, r: &Value, secret: bool) -> Result<Option<String>, Error> {
        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
        let key = r.get("key").and_then(Value::as_str).unwrap_or("");
        let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
        let (kind, store_key) = if secret {
            ("secret", keys::SECRETS)
        } else {
            ("configmap", keys::CONFIGMAPS)
        };
        let Some(obj) = self.lookup(kind, store_key, name, optional)? else {
            return Ok(None);
        };
        match object_files(&obj, secret).remove(key) {
            Some(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            None if optional => Ok(None),
            None => Err(Error::MissingKey {
                kind,
                namespace: self.ns.into(),
                name: name.into(),
                key: key.into(),
                pod: self.pod_name.into(),
            }),
        }
    }

    fn field_ref(&self, path: &str) -> Result<String, Error> {
        let p = self.pod;
        let get = |ptr: &str| {
            p.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let bracket = |prefix: &str| -> Option<String> {
            path.strip_prefix(prefix)?
                .strip_suffix("']")
                .map(str::to_string)
        };
        Ok(match path {
            "metadata.name" => get("/metadata/name"),
            "metadata.namespace" => get("/metadata/namespace"),
            "metadata.uid" => get("/metadata/uid"),
            "spec.nodeName" => get("/spec/nodeName"),
            "spec.serviceAccountName" => get("/spec/serviceAccountName"),
            "status.podIP" => get("/status/podIP"),
            "status.hostIP" => get("/status/hostIP"),
            _ => {
                if let Some(k) = bracket("metadata.labels['") {
                    str_map(p.pointer("/metadata/labels"))
                        .remove(&k)
                        .unwrap_or_default()
                } else if let Some(k) = bracket("metadata.annotations['") {
                    str_map(p.pointer("/metadata/annotations"))
                        .remove(&k)
                        .unwrap_or_default()
                } else {
                    return Err(Error::FieldRef {
                        path: path.into(),
                        pod: self.pod_name.into(),
                    });
                }
            }
        })
    }

    /// `resourceFieldRef`: limits fall back to the node's allocatable (here: requests, else 1
    /// cpu / 1Gi), cpu rounded up to whole cores with the default divisor.
    fn resource_ref(&self, r: &Value, container: &Value) -> String {
        let resource = r.get("resource").and_then(Value::as_str).unwrap_or("");
        let (kind, what) = resource.split_once('.').unwrap_or(("limits", resource));
        let other = if kind == "limits" {
            "requests"
        } else {
            "limits"
        };
        let v = container
            .pointer(&format!("/resources/{kind}/{what}"))
            .or_else(|| container.pointer(&format!("/resources/{other}/{what}")));
        let divisor = r.get("divisor");
        if what == "cpu" {
            let milli = v
                .and_then(|v| super::parse_quantity(v, 1000.0))
                .unwrap_or(1000);
            let div = divisor
                .and_then(|d| super::parse_quantity(d, 1000.0))
                .filter(|d| *d > 0)
                .unwrap_or(1000);
            ((milli + div - 1) / div).to_string()
        } else {
            let bytes = v
                .and_then(|v| super::parse_quantity(v, 1.0))
                .unwrap_or(1 << 30);
            let div = divisor
                .and_then(|d| super::parse_quantity(d, 1.0))
                .filter(|d| *d > 0)
                .unwrap_or(1);
            ((bytes + div - 1) / div).to_string()
        }
    }

    fn container(&self, c: &Value) -> Result<ResolvedContainer, Error> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for from in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let prefix = from.get("prefix").and_then(Value::as_str).unwrap_or("");
            for (field, secret, kind, key) in [
                ("configMapRef", false, "configmap", keys::CONFIGMAPS),
                ("secretRef", true, "secret", keys::SECRETS),
            ] {
                if let Some(r) = from.get(field) {
                    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                    let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
                    if let Some(obj) = self.lookup(kind, key, name, optional)? {
                        for (k, v) in object_files(&obj, secret) {
                            env.insert(
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v).into_owned(),
                            );
                        }
                    }
                }
            }
        }
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = e.get("name").and_then(Value::as_str) else {
                continue;
            };
            let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
                Some(expand(v, &env))
            } else if let Some(from) = e.get("valueFrom") {
                if let Some(r) = from.get("secretKeyRef") {
                    self.key_ref(r, true)?
                } else if let Some(r) = from.get("configMapKeyRef") {
                    self.key_ref(r, false)?
                } else if let Some(r) = from.get("fieldRef") {
                    Some(self.field_ref(r.get("fieldPath").and_then(Value::as_str).unwrap_or(""))?)
                } else if let Some(r) = from.get("resourceFieldRef") {
                    let target = match r.get("containerName").and_then(Value::as_str) {
                        Some(n) => self.find_container(n).unwrap_or(c),
                        None => c,
                    };
                    Some(self.resource_ref(r, target))
                } else {
                    None
                }
            } else {
                Some(String::new())
            };
            if let Some(v) = value {
                env.insert(name.to_string(), v);
            }
        }
        let strings = |k: &str| -> Vec<String> {
            c.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(|s| expand(s, &env)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let ports = c
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("containerPort")?.as_u64())
                    .filter_map(|p| u16::try_from(p).ok())
                    .collect()
            })
            .unwrap_or_default();
        let mounts = c
            .get("volumeMounts")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|m| ResolvedMount {
                        volume: m
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        mount_path: m
                            .get("mountPath")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        sub_path: m
                            .get("subPath")
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                        read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ResolvedContainer {
            name: c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            image: c
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            command: strings("command"),
            args: strings("args"),
            env,
            ports,
            mounts,
        })
    }

    fn find_container(&self, name: &str) -> Option<&Value> {
        ["containers", "initContainers"]
            .iter()
            .filter_map(|l| {
                self.pod
                    .pointer(&format!("/spec/{l}"))
                    .and_then(Value::as_array)
            })
            .flatten()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
    }

    fn volume(&self, v: &Value) -> Result<ResolvedVolume, Error> {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let items = |src: &Value, files: BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
            match src.get("items").and_then(Value::as_array) {
                Some(items) => items
                    .iter()
                    .filter_map(|i| {
                        let k = i.get("key")?.as_str()?;
                        let p = i.get("path").and_then(Value::as_str).unwrap_or(k);
                        Some((p.to_string(), files.get(k)?.clone()))
                    })
                    .collect(),
                None => files,
            }
        };
        if let Some(src) = v.get("configMap") {
            let cm = src.get("name").and_then(Value::as_str).unwrap_or("");
            let optional = src
                .get("optional")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let files = self
                .lookup("configmap", keys::CONFIGMAPS, cm, optional)?
                .map(|o| object_files(&o, false))
                .unwrap_or_default();
            return Ok(ResolvedVolume::ConfigMap {
                name,
                files: items(src, files),
            });
        }
        if let Some(src) = v.get("secret") {
            let s = src.get("secretName").and_then(Value::as_str).unwrap_or("");
            let optional = src
                .get("optional")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let files = self
                .lookup("secret", keys::SECRETS, s, optional)?
                .map(|o| object_files(&o, true))
                .unwrap_or_default();
            return Ok(ResolvedVolume::Secret {
                name,
                files: items(src, files),
            });
        }
        if let Some(claim) = v
            .pointer("/persistentVolumeClaim/claimName")
            .and_then(Value::as_str)
        {
            return Ok(ResolvedVolume::Persistent {
                name,
                claim: claim.to_string(),
            });
        }
        if v.get("ephemeral").is_some() {
            return Ok(ResolvedVolume::Persistent {
                claim: format!("{}-{name}", self.pod_name),
                name,
            });
        }
        // emptyDir, and every other source (hostPath, projected, ...) as a scratch dir
        Ok(ResolvedVolume::EmptyDir { name })
    }
}

/// `$(VAR)` expansion with the variables defined so far; `$$(VAR)` escapes.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    if !s.contains("$(") {
        return s.to_string();
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(esc) = after.strip_prefix("$$") {
            out.push('$');
            rest = esc;
        } else if let Some(body) = after.strip_prefix("$(") {
            match body.find(')') {
                Some(end) => {
                    let var = &body[..end];
                    match env.get(var) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&after[..end + 3]),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(after);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Resolves a pod object for the data plane.
pub fn resolve_pod(store: &Store, pod: &Value) -> Result<ResolvedPod, Error> {
    let ctx = Ctx {
        store,
        pod,
        ns: store::namespace_of(pod),
        pod_name: store::name_of(pod),
    };
    let list = |k: &str| {
        pod.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    Ok(ResolvedPod {
        namespace: ctx.ns.to_string(),
        name: ctx.pod_name.to_string(),
        uid: store::uid_of(pod).to_string(),
        labels: str_map(pod.pointer("/metadata/labels")),
        annotations: str_map(pod.pointer("/metadata/annotations")),
        init_containers: list("initContainers")
            .iter()
            .map(|c| ctx.container(c))
            .collect::<Result<_, _>>()?,
        containers: list("containers")
            .iter()
            .map(|c| ctx.container(c))
            .collect::<Result<_, _>>()?,
        volumes: list("volumes")
            .iter()
            .map(|v| ctx.volume(v))
            .collect::<Result<_, _>>()?,
    })
}

/// (namespace, host) -> pod name: `svc`, `svc.ns`, `svc.ns.svc[.cluster.local]` go through the
/// Service's selector to a Running pod; a bare pod name resolves to itself.
pub fn service_resolver(store: Arc<Store>) -> ServiceResolver {
    Arc::new(move |namespace: &str, host: &str| {
        let host = host.trim_end_matches('.');
        let host = host.strip_suffix(".cluster.local").unwrap_or(host);
        let host = host.strip_suffix(".svc").unwrap_or(host);
        let (svc, ns) = match host.split_once('.') {
            Some((s, n)) => (s, n),
            None => (host, namespace),
        };
        if let Some(service) = store.get(keys::SERVICES, ns, svc) {
            let sel = service.pointer("/spec/selector")?;
            let terms: Vec<String> = sel
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
                .collect();
            let selector = LabelSelector::parse(&terms.join(",")).ok()?;
            let (_, pods) = store.list(keys::PODS, Some(ns));
            return pods
                .iter()
                .filter(|p| selector.matches(p) && !store::is_deleting(p))
                .find(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
                .map(|p| store::name_of(p).to_string());
        }
        store
            .get(keys::PODS, ns, svc)
            .map(|p| store::name_of(&p).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_vars() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
    }
}
