//! A small Kueue: every Job with the `kueue.x-k8s.io/queue-name` label (suspended at creation
//! by admission) gets a Workload; pending Workloads are admitted in creation order
//! (BestEffortFIFO) while the ClusterQueue behind their LocalQueue has nominal cpu/memory
//! quota left, and their Job is unsuspended. `stopPolicy: Hold` stops admission,
//! `HoldAndDrain` also evicts admitted Workloads (their Jobs are suspended again). Finished
//! Jobs release their quota.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::events::{self, Source};
use super::{condition, condition_true, pod_requests, set_condition, Resources};
use crate::admission::QUEUE_LABEL;
use crate::store::{self, keys, now_rfc3339, Store};

const FINALIZER: &str = "kueue.x-k8s.io/resource-in-use";

fn queue_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/labels")?.get(QUEUE_LABEL)?.as_str()
}

fn is_admitted(w: &Value) -> bool {
    condition_true(w, "Admitted")
}

fn is_finished(w: &Value) -> bool {
    condition_true(w, "Finished")
}

/// Usage of a Workload (its podSets' requests times count).
fn usage(w: &Value) -> Resources {
    w.pointer("/spec/podSets")
        .and_then(Value::as_array)
        .map(|sets| {
            sets.iter()
                .map(|s| {
                    s.pointer("/template/spec")
                        .map(pod_requests)
                        .unwrap_or_default()
                        .scale(s.get("count").and_then(Value::as_i64).unwrap_or(1))
                })
                .fold(Resources::default(), Resources::plus)
        })
        .unwrap_or_default()
}

/// Nominal cpu/memory quota of a ClusterQueue (summed over flavors); `None` for a resource it
/// does not cover.
fn nominal(cq: &Value) -> (Option<i64>, Option<i64>) {
    let (mut cpu, mut mem) = (None, None);
    for g in cq
        .pointer("/spec/resourceGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for f in g
            .get("flavors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for r in f
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let q = r.get("nominalQuota");
                match r.get("name").and_then(Value::as_str) {
                    Some("cpu") => {
                        *cpu.get_or_insert(0) += q
                            .and_then(|q| super::parse_quantity(q, 1000.0))
                            .unwrap_or(0)
                    }
                    Some("memory") => {
                        *mem.get_or_insert(0) +=
                            q.and_then(|q| super::parse_quantity(q, 1.0)).unwrap_or(0)
                    }
                    _ => {}
                }
            }
        }
    }
    (cpu, mem)
}

fn flavor_of(cq: &Value) -> String {
    cq.pointer("/spec/resourceGroups/0/flavors/0/name")
        .and_then(Value::as_str)
        .unwrap_or("default-flavor")
        .to_string()
}

fn set_suspend(store: &Store, key: &Arc<str>, ns: &str, name: &str, suspend: bool) {
    let _ = store.modify(key, ns, name, |cur| {
        let mut c = cur.clone();
        c["spec"]["suspend"] = json!(suspend);
        Ok(c)
    });
}

/// Workloads of one ClusterQueue: (admitted, pending).
type AdmittedAndPending<'a> = (Vec<&'a Arc<Value>>, Vec<&'a Arc<Value>>);

pub fn reconcile(store: &Store) {
    let (_, jobs) = store.list(keys::JOBS, None);
    let (_, workloads) = store.list(keys::WORKLOADS, None);
    if jobs.is_empty() && workloads.is_empty() {
        return;
    }
    let wl_key: Arc<str> = Arc::from(keys::WORKLOADS);
    let job_key: Arc<str> = Arc::from(keys::JOBS);
    let ts = now_rfc3339();
    let mut wl_by_job: HashMap<String, Arc<Value>> = HashMap::new();
    for w in &workloads {
        if store::is_deleting(w) {
            // Kueue drops its finalizer once the workload is being deleted
            let _ = store.modify(&wl_key, store::namespace_of(w), store::name_of(w), |cur| {
                let mut c = cur.clone();
                let fins: Vec<String> = store::finalizers_of(cur)
                    .into_iter()
                    .filter(|f| f != FINALIZER)
                    .collect();
                c["metadata"]["finalizers"] = json!(fins);
                Ok(c)
            });
            continue;
        }
        for owner in store::owner_uids(w) {
            wl_by_job.insert(owner, w.clone());
        }
    }
    let jobs_by_uid: HashMap<&str, &Arc<Value>> =
        jobs.iter().map(|j| (store::uid_of(j), j)).collect();
    // workloads for queued jobs; Finished for finished jobs
    for job in &jobs {
        let Some(queue) = queue_of(job) else { continue };
        if store::is_deleting(job) {
            continue;
        }
        let uid = store::uid_of(job);
        let finished = super::job::is_finished(job);
        match wl_by_job.get(uid) {
            None if !finished => {
                let (ns, name) = (store::namespace_of(job), store::name_of(job));
                let count = job
                    .pointer("/spec/parallelism")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                let w = json!({
                    "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
                    "metadata": {
                        "name": format!("job-{name}-{}", &uid.replace('-', "")[..5.min(uid.len())]), "namespace": ns,
                        "labels": {QUEUE_LABEL: queue, "kueue.x-k8s.io/job-uid": uid},
                        "finalizers": [FINALIZER],
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                    },
                    "spec": {
                        "queueName": queue, "priority": 0, "active": true,
                        "podSets": [{"name": "main", "count": count, "template": job.pointer("/spec/template").cloned().unwrap_or(json!({}))}],
                    },
                    "status": {"conditions": []},
                });
                if let Ok(w) = store.create(&wl_key, w) {
                    let msg = format!("Created Workload: {ns}/{}", store::name_of(&w));
                    events::record(store, job, false, "CreatedWorkload", &msg, Source::Kueue);
                }
            }
            Some(w) if finished && !is_finished(w) => {
                let ok = super::condition_true(job, "Complete");
                let _ = store.modify(&wl_key, store::namespace_of(w), store::name_of(w), |cur| {
                    let mut c = cur.clone();
                    let msg = if ok {
                        "Job finished successfully"
                    } else {
                        "Job failed"
                    };
                    set_condition(
                        &mut c,
                        condition(
                            "Finished",
                            true,
                            if ok { "Succeeded" } else { "Failed" },
                            msg,
                            &ts,
                        ),
                    );
                    Ok(c)
                });
            }
            _ => {}
        }
    }
    // admission, per ClusterQueue
    let (_, cqs) = store.list(keys::CLUSTERQUEUES, None);
    let (_, lqs) = store.list(keys::LOCALQUEUES, None);
    let lq_to_cq: HashMap<(String, String), String> = lqs
        .iter()
        .filter_map(|lq| {
            let cq = lq.pointer("/spec/clusterQueue")?.as_str()?;
            Some((
                (
                    store::namespace_of(lq).to_string(),
                    store::name_of(lq).to_string(),
                ),
                cq.to_string(),
            ))
        })
        .collect();
    let (_, workloads) = store.list(keys::WORKLOADS, None);
    let mut live: Vec<&Arc<Value>> = workloads
        .iter()
        .filter(|w| !store::is_deleting(w) && !is_finished(w))
        .collect();
    live.sort_by_key(|w| {
        (
            w.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            store::rv_of(w),
        )
    });
    let mut per_cq: HashMap<String, AdmittedAndPending> = HashMap::new();
    for w in &live {
        let queue = w
            .pointer("/spec/queueName")
            .and_then(Value::as_str)
            .unwrap_or("");
        match lq_to_cq.get(&(store::namespace_of(w).to_string(), queue.to_string())) {
            Some(cq) => {
                let e = per_cq.entry(cq.clone()).or_default();
                if is_admitted(w) {
                    e.0.push(w)
                } else {
                    e.1.push(w)
                }
            }
            None if !is_admitted(w) => {
                let msg = format!("LocalQueue {queue} doesn't exist");
                if pending_message(w) != Some(msg.as_str()) {
                    events::record(store, w, false, "Pending", &msg, Source::Kueue);
                }
                let _ = store.modify(&wl_key, store::namespace_of(w), store::name_of(w), |cur| {
                    let mut c = cur.clone();
                    set_condition(
                        &mut c,
                        condition("QuotaReserved", false, "Inadmissible", &msg, &ts),
                    );
                    Ok(c)
                });
            }
            None => {}
        }
    }
    for cq in &cqs {
        let cq_name = store::name_of(cq).to_string();
        let (admitted, pending) = per_cq.remove(&cq_name).unwrap_or_default();
        let stop = cq
            .pointer("/spec/stopPolicy")
            .and_then(Value::as_str)
            .unwrap_or("None");
        let (cpu_q, mem_q) = nominal(cq);
        let mut used = admitted
            .iter()
            .map(|w| usage(w))
            .fold(Resources::default(), Resources::plus);
        let mut admitted_n = admitted.len();
        if stop == "HoldAndDrain" {
            for w in &admitted {
                evict(store, &wl_key, &job_key, w, &jobs_by_uid, &ts);
            }
            used = Resources::default();
            admitted_n = 0;
        }
        let mut pending_n = 0;
        for w in pending {
            let u = usage(w);
            let fits = stop == "None"
                && cpu_q.map_or(u.cpu_m == 0, |q| used.cpu_m + u.cpu_m <= q)
                && mem_q.map_or(u.mem == 0, |q| used.mem + u.mem <= q);
            if fits {
                used = used.plus(u);
                admitted_n += 1;
                admit(
                    store,
                    &wl_key,
                    &job_key,
                    w,
                    &cq_name,
                    &flavor_of(cq),
                    u,
                    &jobs_by_uid,
                    &ts,
                );
            } else {
                pending_n += 1;
                let msg = if stop == "None" {
                    format!("couldn't assign flavors to pod set main: insufficient unused quota in ClusterQueue {cq_name}")
                } else {
                    format!("ClusterQueue {cq_name} is stopped ({stop})")
                };
                if w.pointer("/status/conditions/0/message")
                    .and_then(Value::as_str)
                    != Some(msg.as_str())
                {
                    events::record(store, w, false, "Pending", &msg, Source::Kueue);
                    let _ =
                        store.modify(&wl_key, store::namespace_of(w), store::name_of(w), |cur| {
                            let mut c = cur.clone();
                            c["status"]["conditions"] =
                                json!([condition("QuotaReserved", false, "Pending", &msg, &ts)]);
                            Ok(c)
                        });
                }
            }
        }
        let status = json!({
            "admittedWorkloads": admitted_n, "reservingWorkloads": admitted_n, "pendingWorkloads": pending_n,
            "flavorsUsage": [{"name": flavor_of(cq), "resources": [
                {"name": "cpu", "total": format!("{}m", used.cpu_m)}, {"name": "memory", "total": used.mem.to_string()}]}],
            "conditions": [{"type": "Active", "status": if stop == "None" { "True" } else { "False" },
                "reason": if stop == "None" { "Ready" } else { "Stopped" }, "message": "", "lastTransitionTime": cq.pointer("/metadata/creationTimestamp").cloned().unwrap_or(json!(ts))}],
        });
        if cq.get("status") != Some(&status) {
            let _ = store.modify(&Arc::from(keys::CLUSTERQUEUES), "", &cq_name, |cur| {
                let mut c = cur.clone();
                c["status"] = status;
                Ok(c)
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn admit(
    store: &Store,
    wl_key: &Arc<str>,
    job_key: &Arc<str>,
    w: &Value,
    cq: &str,
    flavor: &str,
    u: Resources,
    jobs: &HashMap<&str, &Arc<Value>>,
    ts: &str,
) {
    let count = w
        .pointer("/spec/podSets/0/count")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let _ = store.modify(wl_key, store::namespace_of(w), store::name_of(w), |cur| {
        let mut c = cur.clone();
        c["status"]["admission"] = json!({
            "clusterQueue": cq,
            "podSetAssignments": [{"name": "main", "count": count, "flavors": {"cpu": flavor, "memory": flavor},
                "resourceUsage": {"cpu": format!("{}m", u.cpu_m), "memory": u.mem.to_string()}}],
        });
        set_condition(&mut c, condition("QuotaReserved", true, "QuotaReserved", &format!("Quota reserved in ClusterQueue {cq}"), ts));
        set_condition(&mut c, condition("Admitted", true, "Admitted", "The workload is admitted", ts));
        if let Some(cs) = c.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
            cs.retain(|x| x.get("type").and_then(Value::as_str) != Some("Evicted"));
        }
        Ok(c)
    });
    let waited = w
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| {
            (jiff::Timestamp::now().as_second() - t.as_second()).max(0)
        });
    events::record(
        store,
        w,
        false,
        "QuotaReserved",
        &format!("Quota reserved in ClusterQueue {cq}, wait time since queued was {waited}s"),
        Source::Kueue,
    );
    events::record(
        store,
        w,
        false,
        "Admitted",
        &format!("Admitted by ClusterQueue {cq}, wait time since reservation was 0s"),
        Source::Kueue,
    );
    for owner in store::owner_uids(w) {
        if let Some(job) = jobs.get(owner.as_str()) {
            events::record(
                store,
                job,
                false,
                "Started",
                &format!("Admitted by clusterQueue {cq}"),
                Source::Kueue,
            );
            set_suspend(
                store,
                job_key,
                store::namespace_of(job),
                store::name_of(job),
                false,
            );
        }
    }
}

/// The message of a Workload's `QuotaReserved=False` condition, if any.
fn pending_message(w: &Value) -> Option<&str> {
    w.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("QuotaReserved"))?
        .get("message")?
        .as_str()
}

fn evict(
    store: &Store,
    wl_key: &Arc<str>,
    job_key: &Arc<str>,
    w: &Value,
    jobs: &HashMap<&str, &Arc<Value>>,
    ts: &str,
) {
    let _ = store.modify(wl_key, store::namespace_of(w), store::name_of(w), |cur| {
        let mut c = cur.clone();
        if let Some(s) = c["status"].as_object_mut() {
            s.remove("admission");
        }
        set_condition(
            &mut c,
            condition(
                "Evicted",
                true,
                "ClusterQueueStopped",
                "The ClusterQueue is stopped",
                ts,
            ),
        );
        set_condition(
            &mut c,
            condition(
                "Admitted",
                false,
                "NoReservation",
                "The workload has no reservation",
                ts,
            ),
        );
        set_condition(
            &mut c,
            condition(
                "QuotaReserved",
                false,
                "Pending",
                "The ClusterQueue is stopped",
                ts,
            ),
        );
        Ok(c)
    });
    for owner in store::owner_uids(w) {
        if let Some(job) = jobs.get(owner.as_str()) {
            set_suspend(
                store,
                job_key,
                store::namespace_of(job),
                store::name_of(job),
                true,
            );
        }
    }
}
