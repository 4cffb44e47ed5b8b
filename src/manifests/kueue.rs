//! Kueue: constants, the quota computed from listed Node and Pod objects (upstream section 4.3
//! arithmetic), and the ResourceFlavor / ClusterQueue / LocalQueue objects.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

use super::cluster_config::finish_object;

pub const KUEUE_NAMESPACE: &str = "kueue-system";
pub const KUEUE_RELEASE: &str = "kueue";
pub const KUEUE_CHART: &str = "oci://registry.k8s.io/kueue/charts/kueue";
pub const KUEUE_VERSION: &str = "0.16.1";
pub const KUEUE_API: &str = "kueue.x-k8s.io/v1beta2";
pub const LOCAL_QUEUE: &str = "robovast";
pub const CLUSTER_QUEUE: &str = "robovast-cluster-queue";
pub const RESOURCE_FLAVOR: &str = "default-flavor";

/// The ClusterQueue's nominal quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub cpu: u64,
    pub memory_gi: u64,
}

/// Upstream's fallback: 8 CPU, 32Gi.
pub const DEFAULT_QUOTA: Quota = Quota {
    cpu: 8,
    memory_gi: 32,
};

/// The quota and the line to log about how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaOutcome {
    pub quota: Quota,
    /// `true` when the defaults were used; `message` is then a warning.
    pub defaulted: bool,
    pub message: String,
}

impl QuotaOutcome {
    /// The defaults after a failed cluster query.
    pub fn query_failed(error: &str) -> QuotaOutcome {
        QuotaOutcome {
            quota: DEFAULT_QUOTA,
            defaulted: true,
            message: format!("Failed to query cluster resources: {error}. Using defaults."),
        }
    }
}

/// A Kubernetes quantity as a number (cpu in cores, memory in bytes). `None` if unparsable.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (s, mult) in SUFFIXES {
        if let Some(num) = q.strip_suffix(s) {
            if let Ok(n) = num.parse::<f64>() {
                return Some(n * mult);
            }
        }
    }
    q.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn qty(q: Option<&Quantity>) -> Result<f64, String> {
    match q {
        None => Ok(0.0),
        Some(q) => parse_quantity(&q.0).ok_or_else(|| format!("invalid quantity '{}'", q.0)),
    }
}

/// Upstream's `get_cluster_allocatable_resources` on listed objects: Σ allocatable of all nodes
/// minus Σ requests of every container and init container of Running/Pending pods; floors
/// with minimum 1; defaults (8 / 32Gi) when nothing is available or a quantity is invalid.
pub fn compute_quota(nodes: &[Node], pods: &[Pod]) -> QuotaOutcome {
    match sums(nodes, pods) {
        Err(e) => QuotaOutcome::query_failed(&e),
        Ok((alloc_cpu, alloc_mem, req_cpu, req_mem)) => {
            let avail_cpu = alloc_cpu - req_cpu;
            let avail_mem = alloc_mem - req_mem;
            if avail_cpu <= 0.0 || avail_mem <= 0 {
                return QuotaOutcome {
                    quota: DEFAULT_QUOTA,
                    defaulted: true,
                    message: "No available resources (allocatable - requested). Using defaults."
                        .into(),
                };
            }
            let cpu = (avail_cpu.floor() as u64).max(1);
            let memory_gi = ((avail_mem >> 30) as u64).max(1);
            let gi = |b: i128| b as f64 / (1u64 << 30) as f64;
            QuotaOutcome {
                quota: Quota { cpu, memory_gi },
                defaulted: false,
                message: format!(
                    "Cluster: allocatable {alloc_cpu:.1}cpu/{:.1}Gi - requested {req_cpu:.1}cpu/{:.1}Gi = available {avail_cpu:.1}cpu/{:.1}Gi",
                    gi(alloc_mem),
                    gi(req_mem),
                    gi(avail_mem)
                ),
            }
        }
    }
}

fn sums(nodes: &[Node], pods: &[Pod]) -> Result<(f64, i128, f64, i128), String> {
    let (mut alloc_cpu, mut alloc_mem) = (0.0, 0i128);
    for n in nodes {
        let a = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
        alloc_cpu += qty(a.and_then(|a| a.get("cpu")))?;
        alloc_mem += qty(a.and_then(|a| a.get("memory")))? as i128;
    }
    let (mut req_cpu, mut req_mem) = (0.0, 0i128);
    for p in pods {
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or_default();
        if phase != "Running" && phase != "Pending" {
            continue;
        }
        let Some(spec) = &p.spec else { continue };
        let all = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in all {
            let r = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            req_cpu += qty(r.and_then(|r| r.get("cpu")))?;
            req_mem += qty(r.and_then(|r| r.get("memory")))? as i128;
        }
    }
    Ok((alloc_cpu, alloc_mem, req_cpu, req_mem))
}

/// ResourceFlavor, ClusterQueue and LocalQueue (in `namespace`), in apply order.
pub fn queue_objects(namespace: &str, quota: Quota) -> Vec<Value> {
    let flavor = json!({
        "apiVersion": KUEUE_API,
        "kind": "ResourceFlavor",
        "metadata": {"name": RESOURCE_FLAVOR},
    });
    let cq = json!({
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": CLUSTER_QUEUE},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [{
                "coveredResources": ["cpu", "memory"],
                "flavors": [{
                    "name": RESOURCE_FLAVOR,
                    "resources": [
                        {"name": "cpu", "nominalQuota": quota.cpu.to_string()},
                        {"name": "memory", "nominalQuota": format!("{}Gi", quota.memory_gi)},
                    ],
                }],
            }],
        },
    });
    let lq = json!({
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": LOCAL_QUEUE},
        "spec": {"clusterQueue": CLUSTER_QUEUE},
    });
    [flavor, cq, lq]
        .into_iter()
        .map(|o| finish_object(o, Some(namespace)))
        .collect()
}

/// Helm values of upstream section 4.3 (YAML).
pub fn helm_values() -> &'static str {
    "controllerManager:\n  manager:\n    resources:\n      limits:\n        cpu: \"2\"\n        memory: \"8Gi\"\n      requests:\n        cpu: \"500m\"\n        memory: \"3Gi\"\n    configuration:\n      clientConnection:\n        qps: 1000\n        burst: 2000\n      controller:\n        groupKindConcurrency:\n          Job.batch: 100\n          Workload.kueue.x-k8s.io: 100\n      workloadRetentionPolicy:\n        afterFinished: 30s\n"
}

/// `README_kueue.md` text.
pub fn readme(namespace: &str, quota: Quota) -> String {
    format!(
        "# Kueue for vast\n\n\
vast Jobs are queued by [Kueue](https://kueue.sigs.k8s.io/) {KUEUE_VERSION}: they carry the label\n\
`kueue.x-k8s.io/queue-name: {LOCAL_QUEUE}` and are admitted only while the quota allows.\n\n\
1. Install Kueue (once per cluster):\n\n\
   ```bash\n\
   helm install {KUEUE_RELEASE} {KUEUE_CHART} --version={KUEUE_VERSION} --create-namespace --namespace={KUEUE_NAMESPACE}\n\
   ```\n\n\
2. Wait for its CRDs, then create the queues:\n\n\
   ```bash\n\
   kubectl wait --for=condition=established crd/resourceflavors.kueue.x-k8s.io --timeout=60s\n\
   kubectl apply -f kueue-queue-setup.yaml\n\
   ```\n\n\
`kueue-queue-setup.yaml` creates:\n\n\
- ResourceFlavor `{RESOURCE_FLAVOR}` (cluster-scoped);\n\
- ClusterQueue `{CLUSTER_QUEUE}` with nominal quota {cpu} CPU and {mem}Gi memory;\n\
- LocalQueue `{LOCAL_QUEUE}` in namespace `{namespace}` (Jobs in other namespaces are never admitted).\n\n\
Without Kueue the Jobs are not queued: they start at once and can overload the cluster.\n",
        cpu = quota.cpu,
        mem = quota.memory_gi
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpu: &str, mem: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": cpu, "memory": mem}}})).unwrap()
    }

    fn pod(phase: &str, reqs: &[(&str, &str)], init: &[(&str, &str)]) -> Pod {
        let c = |r: &[(&str, &str)]| {
            let m: serde_json::Map<String, Value> =
                r.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            json!([{"name": "c", "resources": {"requests": m}}])
        };
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": c(reqs), "initContainers": c(init)}, "status": {"phase": phase}})).unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("3920m"), Some(3.92));
        assert_eq!(parse_quantity("4"), Some(4.0));
        assert_eq!(parse_quantity("16Gi"), Some(17179869184.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("128974848"), Some(128974848.0));
        assert_eq!(parse_quantity("1k"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn quota_arithmetic_table() {
        let nodes = [node("3920m", "16Gi"), node("4", "16Gi")];
        // 7.92 − (0.5 + 0.25 + 1) = 6.17 → 6; 32Gi − (1Gi + 512Mi + 2Gi) = 28.5Gi → 28.
        let pods = [
            pod(
                "Running",
                &[("cpu", "500m"), ("memory", "1Gi")],
                &[("cpu", "250m"), ("memory", "512Mi")],
            ),
            pod("Pending", &[("cpu", "1"), ("memory", "2Gi")], &[]),
            pod("Succeeded", &[("cpu", "100"), ("memory", "100Gi")], &[]),
        ];
        let q = compute_quota(&nodes, &pods);
        assert_eq!(
            q.quota,
            Quota {
                cpu: 6,
                memory_gi: 28
            }
        );
        assert!(!q.defaulted);
        assert_eq!(
            q.message,
            "Cluster: allocatable 7.9cpu/32.0Gi - requested 1.8cpu/3.5Gi = available 6.2cpu/28.5Gi"
        );
        // Floors with minimum 1.
        let q = compute_quota(
            &[node("1500m", "1536Mi")],
            &[pod("Running", &[("cpu", "1"), ("memory", "1Gi")], &[])],
        );
        assert_eq!(
            q.quota,
            Quota {
                cpu: 1,
                memory_gi: 1
            }
        );
        // Nothing available → defaults with upstream's warning.
        let q = compute_quota(&[node("1", "1Gi")], &[pod("Running", &[("cpu", "1")], &[])]);
        assert_eq!((q.quota, q.defaulted), (DEFAULT_QUOTA, true));
        assert_eq!(
            q.message,
            "No available resources (allocatable - requested). Using defaults."
        );
        assert_eq!(compute_quota(&[], &[]).quota, DEFAULT_QUOTA);
        let q = compute_quota(&[node("bogus", "1Gi")], &[]);
        assert_eq!(
            q.message,
            "Failed to query cluster resources: invalid quantity 'bogus'. Using defaults."
        );
    }

    #[test]
    fn queue_objects_shape() {
        let o = queue_objects(
            "ns",
            Quota {
                cpu: 6,
                memory_gi: 28,
            },
        );
        assert_eq!(o[0]["kind"], "ResourceFlavor");
        assert!(o[0]["metadata"].get("namespace").is_none());
        assert_eq!(
            o[1]["spec"]["resourceGroups"][0]["flavors"][0]["resources"][1]["nominalQuota"],
            "28Gi"
        );
        assert_eq!(o[2]["metadata"]["namespace"], "ns");
    }
}
