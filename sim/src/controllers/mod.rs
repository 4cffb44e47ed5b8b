//! The controllers of the simulated cluster, run in one loop that wakes on every store change
//! and on the next timed transition: garbage collection and namespace termination ([`gc`]),
//! the service account controller (a `default` ServiceAccount per namespace), the endpoints
//! controller ([`endpoints`]), Kueue ([`kueue`]), the job controller ([`job`]), and the
//! scheduler/kubelet ([`kubelet`]); [`events`] records their Events and prunes old ones;
//! [`resolve`] resolves a pod's env and volumes for the data plane.
//!
//! The controllers work on the store directly (store keys from [`crate::store::keys`],
//! defaults from [`crate::admission`]) and import nothing from the API; the API and the
//! control endpoints ([`crate::control`]) call into them.

pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod kubelet;
pub mod kueue;
pub mod resolve;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::SimConfig;
use crate::dataplane::DataPlane;
use crate::faults::Faults;
use crate::store::{keys, Store};

/// Annotation: run time of a simulated pod in milliseconds (on the pod, its Job or template).
pub const ANN_DURATION: &str = "sim.vast.dev/duration-ms";
/// Annotation: `succeed` or `fail` (on the pod, its Job or template).
pub const ANN_OUTCOME: &str = "sim.vast.dev/outcome";
/// Annotation on a Job: its first N pods fail, later ones follow `outcome`.
pub const ANN_FAIL_ATTEMPTS: &str = "sim.vast.dev/fail-attempts";
/// Annotation: exit code of the main container when the outcome is `fail` (default 1).
pub const ANN_EXIT_CODE: &str = "sim.vast.dev/exit-code";
/// Annotation the job controller puts on a pod chosen by the preemption fault.
pub const ANN_PREEMPT: &str = "sim.vast.dev/preempt";

/// Resource quantities: cpu in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_m: i64,
    pub mem: i64,
}

impl Resources {
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            cpu_m: self.cpu_m + o.cpu_m,
            mem: self.mem + o.mem,
        }
    }
    pub fn max(self, o: Resources) -> Resources {
        Resources {
            cpu_m: self.cpu_m.max(o.cpu_m),
            mem: self.mem.max(o.mem),
        }
    }
    pub fn scale(self, n: i64) -> Resources {
        Resources {
            cpu_m: self.cpu_m * n,
            mem: self.mem * n,
        }
    }
    pub fn fits_in(self, cap: Resources) -> bool {
        self.cpu_m <= cap.cpu_m && self.mem <= cap.mem
    }
}

fn quantity_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A Kubernetes quantity scaled by `scale` (1000 for millicores, 1 for bytes), rounded up.
pub fn parse_quantity(v: &Value, scale: f64) -> Option<i64> {
    let s = quantity_str(v)?;
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (num, mult) = suffixes
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
        .unwrap_or((s.as_str(), 1.0));
    let (num, mult) = match s.strip_suffix('P').or_else(|| s.strip_suffix('E')) {
        Some(n) if mult == 1.0 && !s.contains('e') => {
            (n, if s.ends_with('P') { 1e15 } else { 1e18 })
        }
        _ => (num, mult),
    };
    let x: f64 = num.parse().ok()?;
    Some((x * mult * scale).ceil() as i64)
}

/// Requests of one container (`requests`, defaulting to `limits`).
fn container_requests(c: &Value) -> Resources {
    let get = |r: &str, scale: f64| {
        c.pointer(&format!("/resources/requests/{r}"))
            .or_else(|| c.pointer(&format!("/resources/limits/{r}")))
            .and_then(|v| parse_quantity(v, scale))
            .unwrap_or(0)
    };
    Resources {
        cpu_m: get("cpu", 1000.0),
        mem: get("memory", 1.0),
    }
}

/// Effective requests of a pod spec: max(sum of containers, largest init container).
pub fn pod_requests(spec: &Value) -> Resources {
    let sum = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(container_requests)
                .fold(Resources::default(), Resources::plus)
        })
        .unwrap_or_default();
    let init = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(container_requests)
                .fold(Resources::default(), Resources::max)
        })
        .unwrap_or_default();
    sum.max(init)
}

/// A condition list entry.
pub fn condition(kind: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind, "status": if status { "True" } else { "False" }, "reason": reason, "message": message,
        "lastTransitionTime": now, "lastProbeTime": now,
    })
}

/// Sets (or replaces) a condition, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(obj: &mut Value, cond: Value) {
    let status = &mut obj["status"];
    if !status.is_object() {
        *status = json!({});
    }
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(list) = status["conditions"].as_array_mut() {
        match list.iter_mut().find(|c| c.get("type") == cond.get("type")) {
            Some(existing) => {
                let same = existing.get("status") == cond.get("status");
                let ltt = existing.get("lastTransitionTime").cloned();
                *existing = cond;
                if same {
                    if let Some(t) = ltt {
                        existing["lastTransitionTime"] = t;
                    }
                }
            }
            None => list.push(cond),
        }
    }
}

pub fn condition_true(obj: &Value, kind: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// Creates the simulated nodes.
pub fn create_nodes(store: &Store, config: &SimConfig) -> Result<(), crate::store::Error> {
    let key: Arc<str> = Arc::from(keys::NODES);
    let now = crate::store::now_rfc3339();
    for i in 0..config.nodes.count {
        let name = format!("sim-node-{i}");
        let res = json!({"cpu": config.nodes.cpu, "memory": config.nodes.memory, "pods": config.nodes.pods.to_string(), "ephemeral-storage": "100Gi"});
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "vast-sim"}},
            "spec": {},
            "status": {
                "capacity": res, "allocatable": res,
                "conditions": [condition("Ready", true, "KubeletReady", "kubelet is posting ready status", &now)],
                "addresses": [{"type": "InternalIP", "address": format!("10.0.0.{}", i + 10)}, {"type": "Hostname", "address": name}],
                // every field of NodeSystemInfo is required in the OpenAPI schema (the
                // official Python client refuses a Node without them)
                "nodeInfo": {
                    "machineID": format!("{:032x}", 0x5e_u128 << 64 | i as u128),
                    "systemUUID": format!("00000000-0000-4000-8000-{:012x}", i),
                    "bootID": format!("b0000000-0000-4000-8000-{:012x}", i),
                    "kernelVersion": "6.1.0-vast-sim",
                    "osImage": "vast-sim (Debian GNU/Linux 12)",
                    "containerRuntimeVersion": "vast-sim://1",
                    "kubeletVersion": "v1.33.0-vast-sim",
                    "kubeProxyVersion": "v1.33.0-vast-sim",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            }
        });
        match store.create(&key, node) {
            Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The service account controller: every active namespace has a `default` ServiceAccount.
fn service_accounts(store: &Store) {
    let (_, namespaces) = store.list(keys::NAMESPACES, None);
    let key: Arc<str> = Arc::from(keys::SERVICEACCOUNTS);
    for ns in namespaces.iter().filter(|n| !crate::store::is_deleting(n)) {
        let name = crate::store::name_of(ns);
        if store.get(&key, name, "default").is_none() {
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
            let _ = store.create(&key, sa);
        }
    }
}

/// Runs the controllers until `cancel`.
pub async fn run(
    store: Arc<Store>,
    dataplane: Arc<DataPlane>,
    faults: Arc<Faults>,
    config: SimConfig,
    cancel: CancellationToken,
) {
    let mut kubelet = kubelet::Kubelet::new(
        store.clone(),
        dataplane,
        config.pods.clone(),
        faults.clone(),
    );
    let mut jobs = job::JobController::new(store.clone(), config.pods.clone(), faults);
    let mut pruned = Instant::now();
    loop {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(1);
        gc::reconcile(&store);
        service_accounts(&store);
        endpoints::reconcile(&store);
        if now.duration_since(pruned) >= Duration::from_secs(2) {
            events::prune(&store);
            pruned = now;
        }
        kueue::reconcile(&store);
        jobs.reconcile(now, &mut next);
        kubelet.reconcile(now, &mut next).await;
        // a pass scans every object: wait at least as long as it took before the next one,
        // so the controllers take at most about half of a core under a burst of writes
        let pause = now.elapsed().max(Duration::from_millis(2));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = store.changed() => {
                // coalesce bursts of writes into one pass
                tokio::time::sleep(pause).await;
            }
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity(&json!("500m"), 1000.0), Some(500));
        assert_eq!(parse_quantity(&json!("2"), 1000.0), Some(2000));
        assert_eq!(parse_quantity(&json!(1.5), 1000.0), Some(1500));
        assert_eq!(
            parse_quantity(&json!("3Gi"), 1.0),
            Some(3 * 1024 * 1024 * 1024)
        );
        assert_eq!(parse_quantity(&json!("1G"), 1.0), Some(1_000_000_000));
        assert_eq!(parse_quantity(&json!("x"), 1.0), None);
        let spec = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}, {"resources": {"limits": {"cpu": "500m", "memory": "1Mi"}}}],
                          "initContainers": [{"resources": {"requests": {"cpu": "2"}}}]});
        assert_eq!(
            pod_requests(&spec),
            Resources {
                cpu_m: 2000,
                mem: 1024 * 1024
            }
        );
    }
}
