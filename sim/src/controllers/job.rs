//! The job controller: creates pods for unsuspended Jobs (up to `parallelism`, until
//! `completions` succeeded), counts active/ready/succeeded/failed pods, and ends Jobs as the
//! real controller does: `SuccessCriteriaMet` + `Complete`, or `FailureTarget` + `Failed` with
//! `BackoffLimitExceeded` / `DeadlineExceeded`; deletes active pods of suspended Jobs and
//! finished Jobs after `ttlSecondsAfterFinished`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    annotation, condition, condition_true, set_condition, ANN_DURATION, ANN_FAIL_ATTEMPTS,
    ANN_OUTCOME,
};
use crate::admission;
use crate::config::PodTiming;
use crate::store::{self, keys, now_rfc3339, Store};

pub struct JobController {
    store: Arc<Store>,
    _timing: PodTiming,
    jobs_key: Arc<str>,
    pods_key: Arc<str>,
    /// Per Job uid: the pods counted so far, as the real controller's tracking finalizers
    /// keep them (counts survive pod deletion; an active pod that vanishes counts as failed).
    tracked: HashMap<String, Tracked>,
}

#[derive(Default)]
struct Tracked {
    active: HashSet<String>,
    succeeded: HashSet<String>,
    failed: HashSet<String>,
}

fn int(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

fn parse_ts(s: Option<&str>) -> Option<jiff::Timestamp> {
    s?.parse().ok()
}

/// Seconds since a timestamp (0 when unknown).
fn age_secs(ts: Option<&str>) -> f64 {
    parse_ts(ts)
        .map(|t| (jiff::Timestamp::now().as_millisecond() - t.as_millisecond()) as f64 / 1000.0)
        .unwrap_or(0.0)
}

pub fn is_finished(job: &Value) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

impl JobController {
    pub fn new(store: Arc<Store>, timing: PodTiming) -> Self {
        JobController {
            store,
            _timing: timing,
            jobs_key: Arc::from(keys::JOBS),
            pods_key: Arc::from(keys::PODS),
            tracked: HashMap::new(),
        }
    }

    pub fn reconcile(&mut self, now: Instant, next: &mut Instant) {
        let (_, jobs) = self.store.list(keys::JOBS, None);
        if jobs.is_empty() {
            self.tracked.clear();
            return;
        }
        let (_, pods) = self.store.list(keys::PODS, None);
        let mut by_owner: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
        for p in pods {
            for owner in store::owner_uids(&p) {
                by_owner.entry(owner).or_default().push(p.clone());
            }
        }
        for job in &jobs {
            if store::is_deleting(job) {
                continue;
            }
            let pods = by_owner.remove(store::uid_of(job)).unwrap_or_default();
            self.reconcile_job(job, &pods, now, next);
        }
        let live: HashSet<&str> = jobs.iter().map(|j| store::uid_of(j)).collect();
        self.tracked.retain(|uid, _| live.contains(uid.as_str()));
    }

    fn delete_pods(&self, pods: &[&Arc<Value>]) {
        for p in pods {
            let _ = self.store.delete(
                &self.pods_key,
                store::namespace_of(p),
                store::name_of(p),
                None,
                None,
                None,
            );
        }
    }

    /// Counts the Job's pods into its tracking record; returns (succeeded, failed).
    fn track(&mut self, job_uid: &str, pods: &[Arc<Value>]) -> (i64, i64) {
        let t = self.tracked.entry(job_uid.to_string()).or_default();
        let mut present = HashSet::new();
        for p in pods {
            let uid = store::uid_of(p).to_string();
            present.insert(uid.clone());
            match p.pointer("/status/phase").and_then(Value::as_str) {
                Some("Succeeded") => {
                    t.active.remove(&uid);
                    t.succeeded.insert(uid);
                }
                Some("Failed") => {
                    t.active.remove(&uid);
                    t.failed.insert(uid);
                }
                _ if !store::is_deleting(p) => {
                    t.active.insert(uid);
                }
                _ => {}
            }
        }
        let lost: Vec<String> = t
            .active
            .iter()
            .filter(|u| !present.contains(*u))
            .cloned()
            .collect();
        for uid in lost {
            t.active.remove(&uid);
            t.failed.insert(uid);
        }
        (t.succeeded.len() as i64, t.failed.len() as i64)
    }

    /// The controller deletes active pods itself: counted as failed or not counted at all.
    fn delete_active(&mut self, job_uid: &str, active: &[&Arc<Value>], count_as_failed: bool) {
        self.delete_pods(active);
        if let Some(t) = self.tracked.get_mut(job_uid) {
            for p in active {
                let uid = store::uid_of(p).to_string();
                t.active.remove(&uid);
                if count_as_failed {
                    t.failed.insert(uid);
                }
            }
        }
    }

    fn reconcile_job(
        &mut self,
        job: &Value,
        pods: &[Arc<Value>],
        now: Instant,
        next: &mut Instant,
    ) {
        let (ns, name) = (store::namespace_of(job), store::name_of(job));
        if is_finished(job) {
            if let Some(ttl) = int(job, "/spec/ttlSecondsAfterFinished") {
                let age = age_secs(
                    job.pointer("/status/completionTime")
                        .and_then(Value::as_str),
                );
                if age >= ttl as f64 {
                    // Background propagation: the GC deletes the pods
                    let _ = self
                        .store
                        .delete(&self.jobs_key, ns, name, None, None, None);
                } else {
                    *next =
                        (*next).min(now + Duration::from_secs_f64((ttl as f64 - age).max(0.05)));
                }
            }
            return;
        }
        let phase = |p: &Value| {
            p.pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending")
                .to_string()
        };
        let active: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| {
                !store::is_deleting(p) && !matches!(phase(p).as_str(), "Succeeded" | "Failed")
            })
            .collect();
        let job_uid = store::uid_of(job).to_string();
        let (succeeded, failed_pods) = self.track(&job_uid, pods);
        let ready = active.iter().filter(|p| condition_true(p, "Ready")).count() as i64;
        let suspended = job
            .pointer("/spec/suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let completions = int(job, "/spec/completions").unwrap_or(1);
        let parallelism = int(job, "/spec/parallelism").unwrap_or(1);
        let backoff_limit = int(job, "/spec/backoffLimit").unwrap_or(6);
        let ts = now_rfc3339();
        let mut status = job.get("status").cloned().unwrap_or(json!({}));
        if !status.is_object() {
            status = json!({});
        }
        let mut wrapper = json!({"status": status});
        let mut failed = failed_pods;
        let mut finish: Option<(&str, &str, &str)> = None;
        let mut to_create = 0;
        if suspended {
            self.delete_active(&job_uid, &active, false);
            set_condition(
                &mut wrapper,
                condition("Suspended", true, "JobSuspended", "Job suspended", &ts),
            );
            if let Some(s) = wrapper["status"].as_object_mut() {
                s.remove("startTime");
            }
            wrapper["status"]["active"] = json!(0);
            wrapper["status"]["ready"] = json!(0);
        } else {
            if condition_true(&wrapper, "Suspended") {
                set_condition(
                    &mut wrapper,
                    condition("Suspended", false, "JobResumed", "Job resumed", &ts),
                );
            }
            if wrapper.pointer("/status/startTime").is_none() {
                wrapper["status"]["startTime"] = json!(ts);
            }
            let started = wrapper
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .map(str::to_string);
            let deadline = int(job, "/spec/activeDeadlineSeconds");
            let age = age_secs(started.as_deref());
            if deadline.is_some_and(|d| age >= d as f64) {
                self.delete_active(&job_uid, &active, true);
                failed += active.len() as i64;
                finish = Some((
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ));
            } else if failed > backoff_limit {
                self.delete_active(&job_uid, &active, true);
                failed += active.len() as i64;
                finish = Some((
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ));
            } else if succeeded >= completions {
                finish = Some((
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
            } else {
                to_create = (parallelism.min(completions - succeeded) - active.len() as i64).max(0);
                if let Some(d) = deadline {
                    *next = (*next).min(now + Duration::from_secs_f64((d as f64 - age).max(0.05)));
                }
            }
        }
        let mut created = 0;
        for i in 0..to_create {
            let attempt = succeeded + failed + active.len() as i64 + i;
            if self.create_pod(job, attempt) {
                created += 1;
            }
        }
        let active_n = if finish.is_some() || suspended {
            0
        } else {
            active.len() as i64 + created
        };
        let s = &mut wrapper["status"];
        s["active"] = json!(active_n);
        s["ready"] = json!(if finish.is_some() || suspended {
            0
        } else {
            ready
        });
        s["succeeded"] = json!(succeeded);
        s["failed"] = json!(failed);
        s["terminating"] = json!(0);
        s["uncountedTerminatedPods"] = json!({});
        if let Some((kind, reason, message)) = finish {
            if kind == "Complete" {
                set_condition(
                    &mut wrapper,
                    condition("SuccessCriteriaMet", true, reason, message, &ts),
                );
                set_condition(
                    &mut wrapper,
                    condition("Complete", true, reason, message, &ts),
                );
                wrapper["status"]["completionTime"] = json!(ts);
            } else {
                set_condition(
                    &mut wrapper,
                    condition("FailureTarget", true, reason, message, &ts),
                );
                set_condition(
                    &mut wrapper,
                    condition("Failed", true, reason, message, &ts),
                );
                // used for ttlSecondsAfterFinished of failed Jobs as well
                wrapper["status"]["completionTime"] = json!(ts);
            }
        }
        // drop zero counters the real controller omits
        for k in ["active", "succeeded", "failed"] {
            if wrapper["status"][k] == json!(0) {
                if let Some(s) = wrapper["status"].as_object_mut() {
                    s.remove(k);
                }
            }
        }
        let new_status = wrapper["status"].take();
        if job.get("status") != Some(&new_status) {
            let _ = self.store.modify(&self.jobs_key, ns, name, |cur| {
                let mut c = cur.clone();
                c["status"] = new_status;
                Ok(c)
            });
        }
    }

    fn create_pod(&self, job: &Value, attempt: i64) -> bool {
        let (ns, name, uid) = (
            store::namespace_of(job),
            store::name_of(job),
            store::uid_of(job),
        );
        let tmpl = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let mut meta = tmpl
            .get("metadata")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or(json!({}));
        let pod_name = format!("{name}-{}", admission::random_suffix(5));
        meta["name"] = json!(pod_name);
        meta["namespace"] = json!(ns);
        if !meta["labels"].is_object() {
            meta["labels"] = json!({});
        }
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid),
            ("controller-uid", uid),
            ("batch.kubernetes.io/job-name", name),
            ("job-name", name),
        ] {
            meta["labels"][k] = json!(v);
        }
        if !meta["annotations"].is_object() {
            meta["annotations"] = json!({});
        }
        for key in [ANN_DURATION, ANN_OUTCOME] {
            if let Some(v) = annotation(job, key) {
                if meta["annotations"].get(key).is_none() {
                    meta["annotations"][key] = json!(v);
                }
            }
        }
        if let Some(n) = annotation(job, ANN_FAIL_ATTEMPTS).and_then(|v| v.parse::<i64>().ok()) {
            if attempt < n {
                meta["annotations"][ANN_OUTCOME] = json!("fail");
            }
        }
        meta["ownerReferences"] = json!([{
            "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true,
        }]);
        if let Some(m) = meta.as_object_mut() {
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generateName",
            ] {
                m.remove(k);
            }
        }
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tmpl.get("spec").cloned().unwrap_or(json!({}))});
        if let Err(e) = admission::default_pod(&mut pod) {
            tracing::warn!(job = name, namespace = ns, error = %e, "cannot create pod for job");
            return false;
        }
        self.store.create(&self.pods_key, pod).is_ok()
    }
}
