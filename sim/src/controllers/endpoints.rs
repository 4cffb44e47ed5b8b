//! The endpoints controller: every Service with a selector has an `Endpoints` object of the
//! same name listing its pods (running and Ready ones under `addresses`, others with an IP
//! under `notReadyAddresses`) with the Service's ports resolved against the pods'
//! `containerPort`s (a named `targetPort` by port name). Endpoints it made for Services that
//! are gone are deleted; others (the `default/kubernetes` Endpoints of the API server, made
//! at start, and those a client creates) are left alone.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::selector::LabelSelector;
use crate::store::{self, keys, Store};

/// The port a Service port targets on `pod` (numeric `targetPort`, a named one looked up
/// in the pod's container ports, else `port`).
fn target_port(svc_port: &Value, pod: &Value) -> Option<i64> {
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => match name.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)?
                .iter()
                .flat_map(|c| {
                    c.get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64)),
        },
        _ => svc_port.get("port").and_then(Value::as_i64),
    }
}

/// The annotation the real controller puts on the Endpoints it manages (the sim's marker).
const TRIGGER: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// One pass: Endpoints for every Service with a selector, none for Services that are gone.
pub fn reconcile(store: &Store) {
    let (_, services) = store.list(keys::SERVICES, None);
    let key: Arc<str> = Arc::from(keys::ENDPOINTS);
    let (_, existing) = store.list(keys::ENDPOINTS, None);
    for ep in &existing {
        let (ns, name) = (store::namespace_of(ep), store::name_of(ep));
        let managed = ep
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(TRIGGER))
            .is_some();
        if managed && store.get(keys::SERVICES, ns, name).is_none() {
            let _ = store.delete(&key, ns, name, None, None, None);
        }
    }
    let mut pods_by_ns: std::collections::HashMap<String, Vec<Arc<Value>>> = Default::default();
    for svc in &services {
        let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
            continue;
        };
        if sel.is_empty() {
            continue;
        }
        let (ns, name) = (store::namespace_of(svc), store::name_of(svc));
        let terms: Vec<String> = sel
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        let Ok(selector) = LabelSelector::parse(&terms.join(",")) else {
            continue;
        };
        let pods = pods_by_ns
            .entry(ns.to_string())
            .or_insert_with(|| store.list(keys::PODS, Some(ns)).1);
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        let mut ports = Vec::new();
        for pod in pods.iter() {
            if store::is_deleting(pod) || !selector.matches(pod) {
                continue;
            }
            let Some(ip) = pod.pointer("/status/podIP").and_then(Value::as_str) else {
                continue;
            };
            let addr = json!({
                "ip": ip, "nodeName": pod.pointer("/spec/nodeName").cloned().unwrap_or(Value::Null),
                "targetRef": {"kind": "Pod", "namespace": ns, "name": store::name_of(pod), "uid": store::uid_of(pod)},
            });
            if super::condition_true(pod, "Ready") {
                ready.push(addr);
            } else {
                not_ready.push(addr);
            }
            if ports.is_empty() {
                for p in svc
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let mut ep = json!({
                        "port": target_port(p, pod),
                        "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP")),
                    });
                    if let Some(n) = p.get("name").filter(|n| n.as_str() != Some("")) {
                        ep["name"] = n.clone();
                    }
                    ports.push(ep);
                }
            }
        }
        let mut subset = json!({});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        let subsets = if ready.is_empty() && not_ready.is_empty() {
            json!([])
        } else {
            subset["ports"] = json!(ports);
            json!([subset])
        };
        match store.get(&key, ns, name) {
            Some(cur) if cur.get("subsets") == Some(&subsets) => {}
            Some(_) => {
                let _ = store.modify(&key, ns, name, |cur| {
                    let mut c = cur.clone();
                    c["subsets"] = subsets;
                    Ok(c)
                });
            }
            None => {
                let ep = json!({
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": svc.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                        "annotations": {TRIGGER: store::now_rfc3339()}},
                    "subsets": subsets,
                });
                let _ = store.create(&key, ep);
            }
        }
    }
}
