//! Scheduler and kubelet stand-in: binds each pending pod to a node with room for its requests
//! (or leaves it Pending with a `FailedScheduling` event), starts it after the configured delay
//! (init containers complete, containers run, `Ready`), tells the data plane, ends Job pods
//! after their duration with the configured outcome (writing scenario results first), and
//! restarts containers on demand ([`restart_pod`], called by the control endpoint
//! `POST /sim/pods/{ns}/{name}/restart` in [`crate::control`], which maps [`RestartError`] to
//! an HTTP status).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::events::{self, Source};
use super::{
    annotation, condition, pod_requests, set_condition, Resources, ANN_DURATION, ANN_EXIT_CODE,
    ANN_OUTCOME, ANN_PREEMPT,
};
use crate::config::PodTiming;
use crate::dataplane::{self, DataPlane};
use crate::faults::Faults;
use crate::pod::{PodOutcome, ResolvedPod, ResolvedVolume};
use crate::store::{self, keys, now_rfc3339, Store};

struct PodRun {
    ns: String,
    name: String,
    bound_at: Instant,
    ends_at: Option<Instant>,
    resolved: Option<ResolvedPod>,
    /// At `ends_at` the pod is preempted instead of finishing.
    preempt: bool,
}

/// How a Job pod ends (from its `sim.vast.dev/outcome` and `exit-code` annotations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Succeed,
    Fail(i64),
    OomKilled,
}

/// Message of a spot node's shutdown (GKE), on `DisruptionTarget` and `status.message`.
pub const PREEMPTION_MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";

fn is_hang(pod: &Value) -> bool {
    annotation(pod, ANN_OUTCOME) == Some("hang")
}

/// The container whose state carries a Job pod's outcome: the one with `S3_BUCKET` in its
/// env (vast's scenario container), else the first.
pub fn main_container(pod: &Value) -> Option<String> {
    let cs = pod.pointer("/spec/containers").and_then(Value::as_array)?;
    let has_bucket = |c: &&Value| {
        c.get("env").and_then(Value::as_array).is_some_and(|env| {
            env.iter()
                .any(|e| e.get("name").and_then(Value::as_str) == Some("S3_BUCKET"))
        })
    };
    cs.iter()
        .find(has_bucket)
        .or(cs.first())
        .and_then(|c| c.get("name").and_then(Value::as_str))
        .map(str::to_string)
}

pub struct Kubelet {
    store: Arc<Store>,
    dataplane: Arc<DataPlane>,
    timing: PodTiming,
    runs: HashMap<String, PodRun>,
    reported_unschedulable: HashSet<String>,
    pods_key: Arc<str>,
    faults: Arc<Faults>,
    /// PVCs seen on the last pass ((namespace, name) -> uid): one that disappears (or comes
    /// back with another uid) has its data removed, as its volume would be.
    pvcs: HashMap<(String, String), String>,
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
}

fn owned_by_job(pod: &Value) -> bool {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("kind").and_then(Value::as_str) == Some("Job"))
        })
}

fn container_names(pod: &Value, list: &str) -> Vec<(String, String)> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        c.get("image")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn container_status(
    name: &str,
    image: &str,
    uid: &str,
    ready: bool,
    state: Value,
    restarts: i64,
) -> Value {
    json!({
        "name": name, "image": image, "imageID": format!("{image}@sha256:0"), "ready": ready,
        "restartCount": restarts, "started": state.get("running").is_some(), "state": state,
        "containerID": format!("vast-sim://{uid}-{name}"),
    })
}

impl Kubelet {
    pub fn new(
        store: Arc<Store>,
        dataplane: Arc<DataPlane>,
        timing: PodTiming,
        faults: Arc<Faults>,
    ) -> Self {
        Kubelet {
            store,
            dataplane,
            timing,
            runs: HashMap::new(),
            reported_unschedulable: HashSet::new(),
            pods_key: Arc::from(keys::PODS),
            faults,
            pvcs: HashMap::new(),
        }
    }

    pub async fn reconcile(&mut self, now: Instant, next: &mut Instant) {
        self.sync_pvcs().await;
        let (_, pods) = self.store.list(keys::PODS, None);
        let (_, nodes) = self.store.list(keys::NODES, None);
        let mut used: HashMap<String, (Resources, i64)> = HashMap::new();
        for p in &pods {
            if let Some(node) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                if !matches!(phase(p), "Succeeded" | "Failed") {
                    let e = used.entry(node.to_string()).or_default();
                    e.0 = e.0.plus(pod_requests(&p["spec"]));
                    e.1 += 1;
                }
            }
        }
        let mut alive = HashSet::new();
        for pod in &pods {
            let uid = store::uid_of(pod).to_string();
            alive.insert(uid.clone());
            if store::is_deleting(pod) || matches!(phase(pod), "Succeeded" | "Failed") {
                continue;
            }
            let node = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            match (node, phase(pod)) {
                (None, _) => self.schedule(pod, &nodes, &mut used),
                (Some(_), "Pending") => {
                    let bound_at = self.runs.entry(uid.clone()).or_insert_with(|| PodRun {
                        ns: store::namespace_of(pod).into(),
                        name: store::name_of(pod).into(),
                        bound_at: now,
                        ends_at: None,
                        resolved: None,
                        preempt: false,
                    });
                    let start_at = bound_at.bound_at + Duration::from_millis(self.timing.start_ms);
                    if now >= start_at {
                        self.start(pod, now, next).await;
                    } else {
                        *next = (*next).min(start_at);
                    }
                }
                (Some(_), _) => {
                    let run = self.runs.entry(uid.clone()).or_insert_with(|| PodRun {
                        ns: store::namespace_of(pod).into(),
                        name: store::name_of(pod).into(),
                        bound_at: now,
                        ends_at: None,
                        resolved: None,
                        preempt: false,
                    });
                    if let Some(end) = run.ends_at {
                        if now >= end && run.preempt {
                            run.ends_at = None;
                            self.preempt(pod);
                        } else if now >= end {
                            self.finish(pod).await;
                        } else {
                            *next = (*next).min(end);
                        }
                    }
                    self.sync_projected_volumes(pod, &uid).await;
                }
            }
        }
        let gone: Vec<String> = self
            .runs
            .keys()
            .filter(|u| !alive.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(run) = self.runs.remove(&uid) {
                if run.resolved.is_some() {
                    if let Err(e) = self.dataplane.pod_deleted(&run.ns, &run.name).await {
                        tracing::warn!(pod = %run.name, namespace = %run.ns, error = %e, "data plane: pod_deleted failed");
                    }
                }
            }
        }
        self.reported_unschedulable.retain(|u| alive.contains(u));
    }

    /// Removes the data of PVCs deleted since the last pass (by the user, or by the GC with
    /// the pod of a generic ephemeral volume), before any pod starts with a new PVC of that name.
    async fn sync_pvcs(&mut self) {
        let (_, pvcs) = self.store.list(keys::PVCS, None);
        let current: HashMap<(String, String), String> = pvcs
            .iter()
            .map(|p| {
                (
                    (
                        store::namespace_of(p).to_string(),
                        store::name_of(p).to_string(),
                    ),
                    store::uid_of(p).to_string(),
                )
            })
            .collect();
        for (key, uid) in &self.pvcs {
            if current.get(key) != Some(uid) {
                if let Err(e) = self.dataplane.pvc_deleted(&key.0, &key.1).await {
                    tracing::warn!(namespace = %key.0, claim = %key.1, error = %e, "data plane: pvc_deleted failed");
                }
            }
        }
        self.pvcs = current;
    }

    fn schedule(
        &mut self,
        pod: &Value,
        nodes: &[Arc<Value>],
        used: &mut HashMap<String, (Resources, i64)>,
    ) {
        let req = pod_requests(&pod["spec"]);
        let mut insufficient_cpu = 0;
        let mut insufficient_mem = 0;
        let mut too_many = 0;
        let mut chosen = None;
        for n in nodes {
            let name = store::name_of(n);
            let alloc = Resources {
                cpu_m: n
                    .pointer("/status/allocatable/cpu")
                    .and_then(|v| super::parse_quantity(v, 1000.0))
                    .unwrap_or(0),
                mem: n
                    .pointer("/status/allocatable/memory")
                    .and_then(|v| super::parse_quantity(v, 1.0))
                    .unwrap_or(0),
            };
            let max_pods = n
                .pointer("/status/allocatable/pods")
                .and_then(|v| super::parse_quantity(v, 1.0))
                .unwrap_or(110);
            let (u, count) = used.get(name).copied().unwrap_or_default();
            let after = u.plus(req);
            if after.cpu_m > alloc.cpu_m {
                insufficient_cpu += 1;
            }
            if after.mem > alloc.mem {
                insufficient_mem += 1;
            }
            if count + 1 > max_pods {
                too_many += 1;
            }
            if after.fits_in(alloc) && count < max_pods && chosen.is_none() {
                chosen = Some(name.to_string());
            }
        }
        let (ns, name, uid) = (
            store::namespace_of(pod),
            store::name_of(pod),
            store::uid_of(pod).to_string(),
        );
        let now = now_rfc3339();
        match chosen {
            Some(node) => {
                let e = used.entry(node.clone()).or_default();
                e.0 = e.0.plus(req);
                e.1 += 1;
                let message = format!("Successfully assigned {ns}/{name} to {node}");
                let res = self.store.modify(&self.pods_key, ns, name, |cur| {
                    let mut p = cur.clone();
                    p["spec"]["nodeName"] = json!(node);
                    p["status"]["hostIP"] = json!("10.0.0.10");
                    p["status"]["startTime"] = json!(now);
                    set_condition(&mut p, condition("PodScheduled", true, "", "", &now));
                    Ok(p)
                });
                match res {
                    Ok(Some(p)) => events::record(
                        &self.store,
                        &p,
                        false,
                        "Scheduled",
                        &message,
                        Source::Scheduler,
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::debug!(pod = name, error = %e, "bind failed"),
                }
            }
            None => {
                let mut reasons = Vec::new();
                if insufficient_cpu > 0 {
                    reasons.push(format!("{insufficient_cpu} Insufficient cpu"));
                }
                if insufficient_mem > 0 {
                    reasons.push(format!("{insufficient_mem} Insufficient memory"));
                }
                if too_many > 0 {
                    reasons.push(format!("{too_many} Too many pods"));
                }
                let message = format!(
                    "0/{} nodes are available: {}.",
                    nodes.len(),
                    reasons.join(", ")
                );
                if self.reported_unschedulable.insert(uid.clone()) {
                    let _ = self.store.modify(&self.pods_key, ns, name, |cur| {
                        let mut p = cur.clone();
                        set_condition(
                            &mut p,
                            condition("PodScheduled", false, "Unschedulable", &message, &now),
                        );
                        Ok(p)
                    });
                    events::record(
                        &self.store,
                        pod,
                        true,
                        "FailedScheduling",
                        &message,
                        Source::Scheduler,
                    );
                }
            }
        }
    }

    async fn start(&mut self, pod: &Value, now: Instant, next: &mut Instant) {
        let (ns, name, uid) = (
            store::namespace_of(pod).to_string(),
            store::name_of(pod).to_string(),
            store::uid_of(pod).to_string(),
        );
        let ts = now_rfc3339();
        self.ensure_ephemeral_claims(pod);
        let resolved = match super::resolve::resolve_pod(&self.store, pod) {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                let reported = pod
                    .pointer("/status/containerStatuses/0/state/waiting/message")
                    .and_then(Value::as_str)
                    == Some(msg.as_str());
                if !reported {
                    events::record(
                        &self.store,
                        pod,
                        true,
                        "Failed",
                        &format!("Error: {msg}"),
                        Source::Kubelet,
                    );
                }
                let _ = self.store.modify(&self.pods_key, &ns, &name, |cur| {
                    let mut p = cur.clone();
                    let statuses: Vec<Value> = container_names(cur, "containers")
                        .iter()
                        .map(|(n, img)| container_status(n, img, &uid, false, json!({"waiting": {"reason": "CreateContainerConfigError", "message": msg}}), 0))
                        .collect();
                    p["status"]["containerStatuses"] = json!(statuses);
                    Ok(p)
                });
                *next = (*next).min(now + Duration::from_millis(200));
                return;
            }
        };
        if owned_by_job(pod) && DataPlane::is_scenario_pod(&resolved) {
            if let Err(e) = self.dataplane.check_scenario_inputs(&resolved) {
                self.fail_in_init(pod, &resolved, &format!("vast: {e}"));
                return;
            }
        }
        if let Err(e) = self.dataplane.pod_started(&resolved).await {
            tracing::warn!(pod = %name, namespace = %ns, error = %e, "data plane: pod_started failed");
        }
        let duration = annotation(pod, ANN_DURATION)
            .and_then(|d| d.parse::<u64>().ok())
            .or_else(|| owned_by_job(pod).then_some(self.timing.job_duration_ms));
        // a preempted pod is stopped half-way through its run time (also when it would hang)
        let preempt = owned_by_job(pod) && annotation(pod, ANN_PREEMPT) == Some("true");
        let ends_at = if preempt {
            Some(now + Duration::from_millis(duration.unwrap_or(self.timing.job_duration_ms) / 2))
        } else if is_hang(pod) {
            None
        } else {
            duration.map(|ms| now + Duration::from_millis(ms))
        };
        if let Some(end) = ends_at {
            *next = (*next).min(end);
        }
        if let Some(run) = self.runs.get_mut(&uid) {
            run.ends_at = ends_at;
            run.resolved = Some(resolved);
            run.preempt = preempt;
        }
        let mut started: Vec<(String, String)> = container_names(pod, "initContainers");
        started.extend(container_names(pod, "containers"));
        self.container_events(pod, &started);
        let _ = self.store.modify(&self.pods_key, &ns, &name, |cur| {
            let mut p = cur.clone();
            let init: Vec<Value> = container_names(cur, "initContainers")
                .iter()
                .map(|(n, img)| {
                    container_status(n, img, &uid, false, json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts, "finishedAt": ts}}), 0)
                })
                .collect();
            let main: Vec<Value> = container_names(cur, "containers")
                .iter()
                .map(|(n, img)| container_status(n, img, &uid, true, json!({"running": {"startedAt": ts}}), 0))
                .collect();
            let ip = format!("10.244.{}.{}", rand::random_range(0..255u8), rand::random_range(1..255u8));
            p["status"]["phase"] = json!("Running");
            p["status"]["podIP"] = json!(ip);
            p["status"]["podIPs"] = json!([{"ip": ip}]);
            if !init.is_empty() {
                p["status"]["initContainerStatuses"] = json!(init);
            }
            p["status"]["containerStatuses"] = json!(main);
            for c in ["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"] {
                set_condition(&mut p, condition(c, true, "", "", &ts));
            }
            Ok(p)
        });
    }

    /// The kubelet's events for containers it starts: `Pulled`, `Created`, `Started`.
    fn container_events(&self, pod: &Value, containers: &[(String, String)]) {
        for (c, image) in containers {
            for (reason, message) in [
                (
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                ),
                ("Created", format!("Created container: {c}")),
                ("Started", format!("Started container {c}")),
            ] {
                events::record(&self.store, pod, false, reason, &message, Source::Kubelet);
            }
        }
    }

    /// The init container that fetches the scenario's files (the one with `S3_BUCKET` in its
    /// env, else the first) exits 1 with `message`: as with `restartPolicy: Never` on a real
    /// kubelet, the pod is Failed, later init containers and the containers never start. A pod
    /// without init containers fails in its scenario container instead.
    fn fail_in_init(&self, pod: &Value, resolved: &ResolvedPod, message: &str) {
        let (ns, name, uid) = (
            store::namespace_of(pod).to_string(),
            store::name_of(pod).to_string(),
            store::uid_of(pod).to_string(),
        );
        let failing = resolved
            .init_containers
            .iter()
            .find(|c| c.env.contains_key("S3_BUCKET"))
            .or(resolved.init_containers.first())
            .map(|c| c.name.clone());
        let ts = now_rfc3339();
        // the containers that ran: the init containers up to the failing one, or (without
        // init containers) the scenario container
        let inits = container_names(pod, "initContainers");
        let ran: Vec<(String, String)> = match &failing {
            Some(f) => {
                let upto = inits.iter().position(|(n, _)| n == f).map_or(0, |i| i + 1);
                inits[..upto].to_vec()
            }
            None => container_names(pod, "containers")
                .into_iter()
                .filter(|(n, _)| {
                    resolved
                        .containers
                        .iter()
                        .any(|c| &c.name == n && c.env.contains_key("S3_BUCKET"))
                })
                .collect(),
        };
        self.container_events(pod, &ran);
        let terminated = json!({"terminated": {"exitCode": 1, "reason": "Error", "message": message, "startedAt": ts, "finishedAt": ts}});
        let waiting = json!({"waiting": {"reason": "PodInitializing"}});
        let _ = self.store.modify(&self.pods_key, &ns, &name, |cur| {
            let mut p = cur.clone();
            let mut reached = false;
            let init: Vec<Value> = container_names(cur, "initContainers")
                .iter()
                .map(|(n, img)| {
                    let state = if Some(n) == failing.as_ref() {
                        reached = true;
                        terminated.clone()
                    } else if reached {
                        waiting.clone()
                    } else {
                        json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts, "finishedAt": ts}})
                    };
                    container_status(n, img, &uid, false, state, 0)
                })
                .collect();
            let main: Vec<Value> = container_names(cur, "containers")
                .iter()
                .map(|(n, img)| {
                    let failed_here = failing.is_none()
                        && resolved
                            .containers
                            .iter()
                            .any(|c| &c.name == n && c.env.contains_key("S3_BUCKET"));
                    let state = if failed_here { terminated.clone() } else { waiting.clone() };
                    container_status(n, img, &uid, false, state, 0)
                })
                .collect();
            p["status"]["phase"] = json!("Failed");
            if !init.is_empty() {
                p["status"]["initContainerStatuses"] = json!(init);
            }
            p["status"]["containerStatuses"] = json!(main);
            let incomplete = failing.clone().unwrap_or_default();
            set_condition(&mut p, condition("PodReadyToStartContainers", true, "", "", &ts));
            if failing.is_some() {
                let why = format!("containers with incomplete status: [{incomplete}]");
                set_condition(&mut p, condition("Initialized", false, "ContainersNotInitialized", &why, &ts));
            } else {
                set_condition(&mut p, condition("Initialized", true, "", "", &ts));
            }
            for c in ["ContainersReady", "Ready"] {
                set_condition(&mut p, condition(c, false, "PodFailed", "", &ts));
            }
            Ok(p)
        });
        tracing::info!(pod = %name, namespace = %ns, %message, "scenario pod failed in its init container");
    }

    /// configMap and secret volumes of a running pod follow changes of their sources (a real
    /// kubelet does so within a minute; the sim on its next pass): the data plane gets the
    /// pod again with the new files.
    async fn sync_projected_volumes(&mut self, pod: &Value, uid: &str) {
        let Some(run) = self.runs.get_mut(uid) else {
            return;
        };
        let Some(old) = &run.resolved else { return };
        let projected = |v: &ResolvedVolume| {
            matches!(
                v,
                ResolvedVolume::ConfigMap { .. } | ResolvedVolume::Secret { .. }
            )
        };
        if !old.volumes.iter().any(projected) {
            return;
        }
        let Ok(fresh) = super::resolve::resolve_pod(&self.store, pod) else {
            return;
        };
        if fresh.volumes == old.volumes {
            return;
        }
        let mut updated = old.clone();
        updated.volumes = fresh.volumes;
        if let Err(e) = self.dataplane.pod_started(&updated).await {
            tracing::warn!(pod = %run.name, namespace = %run.ns, error = %e, "data plane: volume update failed");
        }
        run.resolved = Some(updated);
    }

    /// Generic ephemeral volumes get their PVC (`<pod>-<volume>`, owned by the pod).
    fn ensure_ephemeral_claims(&self, pod: &Value) {
        let ns = store::namespace_of(pod);
        for v in pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(tmpl) = v.pointer("/ephemeral/volumeClaimTemplate") else {
                continue;
            };
            let claim = format!(
                "{}-{}",
                store::name_of(pod),
                v.get("name").and_then(Value::as_str).unwrap_or("")
            );
            if self.store.get(keys::PVCS, ns, &claim).is_some() {
                continue;
            }
            let spec = tmpl.get("spec").cloned().unwrap_or(json!({}));
            let size = spec
                .pointer("/resources/requests/storage")
                .cloned()
                .unwrap_or(json!("1Gi"));
            let pvc = json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": ns, "labels": tmpl.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": store::name_of(pod), "uid": store::uid_of(pod), "controller": true, "blockOwnerDeletion": true}]},
                "spec": spec,
                "status": {"phase": "Bound", "capacity": {"storage": size}},
            });
            let _ = self.store.create(&Arc::from(keys::PVCS), pvc);
        }
    }

    async fn finish(&mut self, pod: &Value) {
        let (ns, name, uid) = (
            store::namespace_of(pod).to_string(),
            store::name_of(pod).to_string(),
            store::uid_of(pod).to_string(),
        );
        let ending = match annotation(pod, ANN_OUTCOME) {
            Some("fail") | Some("failed") | Some("failure") => Ending::Fail(
                annotation(pod, ANN_EXIT_CODE)
                    .and_then(|c| c.trim().parse::<i64>().ok())
                    .filter(|c| *c != 0)
                    .unwrap_or(1),
            ),
            Some("oomkilled") | Some("OOMKilled") => Ending::OomKilled,
            Some(_) => Ending::Succeed,
            None if owned_by_job(pod) && self.timing.job_outcome == "fail" => Ending::Fail(1),
            None => Ending::Succeed,
        };
        let mut ending = ending;
        let main_name = main_container(pod).unwrap_or_default();
        // the message of the scenario container when the results could not be uploaded
        let mut upload_failure: Option<String> = None;
        if let Some(run) = self.runs.get_mut(&uid) {
            run.ends_at = None;
            let outcome = match ending {
                Ending::Succeed => Some(PodOutcome::Succeeded),
                Ending::Fail(_) => Some(PodOutcome::Failed),
                // the container was killed: its post-run upload never happens
                Ending::OomKilled => None,
            };
            if let (true, Some(resolved), Some(outcome)) =
                (owned_by_job(pod), &run.resolved, outcome)
            {
                if let Err(e) = self
                    .dataplane
                    .write_scenario_results(resolved, outcome)
                    .await
                {
                    tracing::warn!(pod = %name, namespace = %ns, error = %e, "data plane: writing scenario results failed");
                    // vast's entrypoint fails its container when the upload fails
                    if DataPlane::is_scenario_pod(resolved) {
                        if ending == Ending::Succeed {
                            // the entrypoint's EX_TEMPFAIL: the scenario succeeded, the upload did not
                            ending = Ending::Fail(75);
                        }
                        upload_failure = Some(format!("vast: uploading results failed: {e}"));
                    }
                }
            }
        }
        let ts = now_rfc3339();
        let (phase, code, reason) = match ending {
            Ending::Succeed => ("Succeeded", 0, "Completed"),
            Ending::Fail(code) => ("Failed", code, "Error"),
            Ending::OomKilled => ("Failed", 137, "OOMKilled"),
        };
        let _ = self.store.modify(&self.pods_key, &ns, &name, |cur| {
            let mut p = cur.clone();
            let started = cur.pointer("/status/startTime").cloned().unwrap_or(json!(ts));
            let main: Vec<Value> = container_names(cur, "containers")
                .iter()
                .map(|(n, img)| {
                    // the outcome is the main container's; the others exit 0
                    let (code, reason) = if *n == main_name { (code, reason) } else { (0, "Completed") };
                    let mut state = json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": ts}});
                    if let Some(msg) = upload_failure.as_ref().filter(|_| *n == main_name) {
                        state["terminated"]["message"] = json!(msg);
                    }
                    container_status(n, img, &uid, false, state, 0)
                })
                .collect();
            p["status"]["phase"] = json!(phase);
            p["status"]["containerStatuses"] = json!(main);
            for c in ["ContainersReady", "Ready"] {
                set_condition(&mut p, condition(c, false, "PodCompleted", "", &ts));
            }
            Ok(p)
        });
    }

    /// A spot node's shutdown, as GKE reports it: `DisruptionTarget` (`TerminationByKubelet`),
    /// phase `Failed`, `reason: Terminated`, containers killed (137, `Error`); no results are
    /// uploaded. Counted in the sim's stats.
    fn preempt(&mut self, pod: &Value) {
        let (ns, name, uid) = (
            store::namespace_of(pod).to_string(),
            store::name_of(pod).to_string(),
            store::uid_of(pod).to_string(),
        );
        let ts = now_rfc3339();
        let res = self.store.modify(&self.pods_key, &ns, &name, |cur| {
            let mut p = cur.clone();
            let started = cur.pointer("/status/startTime").cloned().unwrap_or(json!(ts));
            let main: Vec<Value> = container_names(cur, "containers")
                .iter()
                .map(|(n, img)| {
                    let state = json!({"terminated": {"exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": ts}});
                    container_status(n, img, &uid, false, state, 0)
                })
                .collect();
            p["status"]["phase"] = json!("Failed");
            p["status"]["reason"] = json!("Terminated");
            p["status"]["message"] = json!(PREEMPTION_MESSAGE);
            p["status"]["containerStatuses"] = json!(main);
            set_condition(&mut p, condition("DisruptionTarget", true, "TerminationByKubelet", PREEMPTION_MESSAGE, &ts));
            for c in ["ContainersReady", "Ready"] {
                set_condition(&mut p, condition(c, false, "PodFailed", "", &ts));
            }
            Ok(p)
        });
        if matches!(res, Ok(Some(_))) {
            let job = pod
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("kind").and_then(Value::as_str) == Some("Job"))
                })
                .and_then(|r| r.get("name").and_then(Value::as_str))
                .unwrap_or("")
                .to_string();
            self.faults.record(|s| {
                s.preempted += 1;
                s.preempted_jobs.push(job);
            });
            tracing::info!(pod = %name, namespace = %ns, "pod preempted (simulated spot node shutdown)");
        }
    }
}

/// Why [`restart_pod`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// There is no such pod (or it was deleted during the restart).
    #[error("pods \"{name}\" not found")]
    NotFound { name: String },
    /// Only running pods can be restarted.
    #[error("pod {ns}/{name} is not running; only running pods can be restarted")]
    NotRunning { ns: String, name: String },
    /// Updating the pod's status failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The pod's env or volumes could not be resolved.
    #[error(transparent)]
    Resolve(#[from] super::resolve::Error),
    /// The data plane could not restart the pod.
    #[error("data plane restart of {ns}/{name} failed: {source}")]
    DataPlane {
        ns: String,
        name: String,
        source: dataplane::Error,
    },
}

/// Restarts the containers of a running pod (control endpoint): restartCount++, `Ready` goes
/// False, the data plane restarts the pod (`wipe`: emptyDirs are emptied), `Ready` goes True.
/// Returns the pod as stored at the end.
pub async fn restart_pod(
    store: &Store,
    dataplane: &DataPlane,
    ns: &str,
    name: &str,
    wipe: bool,
) -> Result<Arc<Value>, RestartError> {
    let key: Arc<str> = Arc::from(keys::PODS);
    let not_found = || RestartError::NotFound {
        name: name.to_string(),
    };
    let pod = store.get(&key, ns, name).ok_or_else(not_found)?;
    if phase(&pod) != "Running" {
        return Err(RestartError::NotRunning {
            ns: ns.to_string(),
            name: name.to_string(),
        });
    }
    let ts = now_rfc3339();
    let set_ready = |ready: bool, bump: bool| {
        store.modify(&key, ns, name, |cur| {
            let mut p = cur.clone();
            if let Some(cs) = p.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut) {
                for c in cs {
                    if bump {
                        let n = c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
                        c["restartCount"] = json!(n + 1);
                        c["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": ts}});
                        c["state"] = json!({"running": {"startedAt": ts}});
                    }
                    c["ready"] = json!(ready);
                }
            }
            for c in ["ContainersReady", "Ready"] {
                set_condition(&mut p, condition(c, ready, if ready { "" } else { "ContainersNotReady" }, "", &ts));
            }
            Ok(p)
        })
    };
    set_ready(false, true)?;
    let fresh = store.get(&key, ns, name).ok_or_else(not_found)?;
    let resolved = super::resolve::resolve_pod(store, &fresh)?;
    dataplane
        .pod_restarted(&resolved, wipe)
        .await
        .map_err(|source| RestartError::DataPlane {
            ns: ns.to_string(),
            name: name.to_string(),
            source,
        })?;
    set_ready(true, false)?.ok_or_else(not_found)
}

/// Whether an env var name looks like a credential (left out of the logged parameters).
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["KEY", "SECRET", "PASSWORD", "TOKEN", "CREDENTIAL"]
        .iter()
        .any(|w| n.contains(w))
}

/// Whether the log of a container (the only one when `container` is `None`) is complete:
/// the container has terminated, or the pod has ended without it ever running.
pub fn log_ended(pod: &Value, container: Option<&str>) -> bool {
    if matches!(phase(pod), "Succeeded" | "Failed") {
        return true;
    }
    let names: Vec<String> = container_names(pod, "containers")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let Some(c) = container
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .or_else(|| (names.len() == 1).then(|| names[0].clone()))
    else {
        return true;
    };
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|l| {
            pod.pointer(&format!("/status/{l}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(c.as_str()))
        .is_some_and(|s| s.pointer("/state/terminated").is_some())
}

/// The log of one container of a pod, as lines (`GET .../pods/{name}/log`). `container`
/// defaults to the only container; a name the pod does not have, or none for a pod with
/// several containers, is an error with the real API server's message (a 400). Job pods
/// log what their simulated scenario does: its start, its parameters (literal env values,
/// credentials left out) and how it ended; other pods have an empty log.
pub fn pod_log(pod: &Value, container: Option<&str>) -> Result<Vec<String>, String> {
    let name = store::name_of(pod);
    let names = |list: &str| -> Vec<String> {
        container_names(pod, list)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    let (main, init) = (names("containers"), names("initContainers"));
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) if main.iter().chain(&init).any(|n| n == c) => c.to_string(),
        Some(c) => return Err(format!("container {c} is not valid for pod {name}")),
        None if main.len() == 1 => main[0].clone(),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            return Err(msg);
        }
    };
    if !owned_by_job(pod) {
        return Ok(Vec::new());
    }
    let is_init = init.contains(&container);
    let list = if is_init {
        "initContainerStatuses"
    } else {
        "containerStatuses"
    };
    let state = pod
        .pointer(&format!("/status/{list}"))
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()))
        })
        .and_then(|c| c.get("state"))
        .cloned()
        .unwrap_or(Value::Null);
    let terminated = state.get("terminated");
    if state.get("running").is_none() && terminated.is_none() {
        return Ok(Vec::new());
    }
    let code = terminated
        .and_then(|t| t.get("exitCode"))
        .and_then(Value::as_i64);
    let reason = terminated
        .and_then(|t| t.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = terminated
        .and_then(|t| t.get("message"))
        .and_then(Value::as_str);
    let mut lines = Vec::new();
    if is_init {
        lines.push(format!("vast-sim: init container {container} started"));
        if let Some(m) = message {
            lines.push(m.to_string());
        }
        match code {
            Some(0) => lines.push(format!("vast-sim: init container {container} completed")),
            Some(c) => lines.push(format!(
                "vast-sim: init container {container} failed with exit code {c}"
            )),
            None => {}
        }
        return Ok(lines);
    }
    if main_container(pod).as_deref() != Some(container.as_str()) {
        lines.push(format!("vast-sim: container {container} started"));
        if let Some(c) = code {
            lines.push(format!(
                "vast-sim: container {container} exited with code {c}"
            ));
        }
        return Ok(lines);
    }
    let spec = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()))
        });
    let env: Vec<(String, String)> = spec
        .and_then(|c| c.get("env"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e.get("name")?.as_str()?.to_string(),
                e.get("value")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let test_id = env
        .iter()
        .find(|(k, _)| k == "TEST_ID")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| name.to_string());
    lines.push(format!("vast-sim: starting scenario {test_id}"));
    let params: Vec<String> = env
        .iter()
        .filter(|(k, _)| !secret_name(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    lines.push(format!("vast-sim: parameters: {}", params.join(" ")));
    let Some(code) = code else {
        return Ok(lines);
    };
    if let Some(m) = message {
        lines.push(m.to_string());
    }
    let preempted = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("DisruptionTarget")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        });
    lines.push(if preempted {
        "vast-sim: scenario finished: preempted".to_string()
    } else if reason == "OOMKilled" {
        "vast-sim: scenario finished: OOMKilled".to_string()
    } else if code == 0 {
        "vast-sim: scenario finished: succeeded".to_string()
    } else {
        format!("vast-sim: scenario finished: failed with exit code {code}")
    });
    Ok(lines)
}
