//! The job controller: creates pods for unsuspended Jobs (up to `parallelism`, until
//! `completions` succeeded), counts active/ready/succeeded/failed pods, and ends Jobs as the
//! real controller does: `SuccessCriteriaMet` + `Complete`, or `FailureTarget` + `Failed` with
//! `BackoffLimitExceeded` / `DeadlineExceeded` / `PodFailurePolicy`; applies the Job's
//! `podFailurePolicy` to each failed pod (`Ignore`: not counted, replaced; `FailJob`: the Job
//! fails at once; `Count`); deletes active pods of suspended Jobs and finished Jobs after
//! `ttlSecondsAfterFinished`. New pods get the outcome and preemption the faults decide
//! ([`Faults::job_pod`]) as annotations, which the kubelet acts on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::events::{self, Source};
use super::{
    annotation, condition, condition_true, set_condition, ANN_DURATION, ANN_EXIT_CODE,
    ANN_FAIL_ATTEMPTS, ANN_OUTCOME, ANN_PREEMPT,
};
use crate::admission;
use crate::config::PodTiming;
use crate::faults::{Faults, ScenarioOutcome};
use crate::store::{self, keys, now_rfc3339, Store};

pub struct JobController {
    store: Arc<Store>,
    _timing: PodTiming,
    jobs_key: Arc<str>,
    pods_key: Arc<str>,
    faults: Arc<Faults>,
    /// Per Job uid: the pods counted so far, as the real controller's tracking finalizers
    /// keep them (counts survive pod deletion; an active pod that vanishes counts as failed).
    tracked: HashMap<String, Tracked>,
}

#[derive(Default)]
struct Tracked {
    /// Active pods by uid, as last seen (a pod that vanishes is judged by this state).
    active: HashMap<String, Arc<Value>>,
    succeeded: HashSet<String>,
    /// Failed pods counted toward `backoffLimit`.
    failed: HashSet<String>,
    /// Failed pods an `Ignore` rule of the `podFailurePolicy` matched.
    ignored: HashSet<String>,
    /// Pods created for the Job so far (the attempt number of the next one).
    created: u64,
    /// The message of the first `FailJob` rule that matched.
    fail_job: Option<String>,
}

/// What a Job's `podFailurePolicy` says about one failed pod.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyAction {
    /// Counts toward `backoffLimit` (also when no rule matches).
    Count,
    /// Not counted; the pod is replaced.
    Ignore,
    /// The Job fails with this message (reason `PodFailurePolicy`).
    FailJob(String),
}

/// The first container (of `containerStatuses`, then `initContainerStatuses`) terminated with
/// a non-zero exit code that `req` (`onExitCodes`) matches, as the real job controller does.
fn match_exit_codes(pod: &Value, req: &Value) -> Option<(String, i64)> {
    let want_name = req.get("containerName").and_then(Value::as_str);
    let not_in = req.get("operator").and_then(Value::as_str) == Some("NotIn");
    let values: Vec<i64> = req
        .get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    for list in ["containerStatuses", "initContainerStatuses"] {
        let statuses = pod
            .pointer(&format!("/status/{list}"))
            .and_then(Value::as_array);
        for cs in statuses.into_iter().flatten() {
            let Some(code) = cs
                .pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64)
            else {
                continue;
            };
            let name = cs.get("name").and_then(Value::as_str).unwrap_or("");
            if want_name.is_some_and(|w| w != name) || code == 0 {
                continue;
            }
            if values.contains(&code) != not_in {
                return Some((name.to_string(), code));
            }
        }
    }
    None
}

/// The type of the first pod condition that one of `patterns` (`onPodConditions`) matches.
fn match_conditions(pod: &Value, patterns: &[Value]) -> Option<String> {
    let conds = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    conds.iter().find_map(|c| {
        let (kind, status) = (
            c.get("type").and_then(Value::as_str)?,
            c.get("status").and_then(Value::as_str)?,
        );
        patterns
            .iter()
            .any(|p| {
                p.get("type").and_then(Value::as_str) == Some(kind)
                    && p.get("status").and_then(Value::as_str).unwrap_or("True") == status
            })
            .then(|| kind.to_string())
    })
}

/// Applies `job`'s `podFailurePolicy` to a failed pod: rules in order, the first match wins.
pub fn pod_failure_action(job: &Value, pod: &Value) -> PolicyAction {
    let Some(rules) = job
        .pointer("/spec/podFailurePolicy/rules")
        .and_then(Value::as_array)
    else {
        return PolicyAction::Count;
    };
    let (ns, name) = (store::namespace_of(pod), store::name_of(pod));
    for (index, rule) in rules.iter().enumerate() {
        let action = rule.get("action").and_then(Value::as_str).unwrap_or("");
        let message = if let Some(req) = rule.get("onExitCodes").filter(|v| v.is_object()) {
            match match_exit_codes(pod, req) {
                Some((container, code)) => format!("Container {container} for pod {ns}/{name} failed with exit code {code} matching {action} rule at index {index}"),
                None => continue,
            }
        } else if let Some(patterns) = rule.get("onPodConditions").and_then(Value::as_array) {
            match match_conditions(pod, patterns) {
                Some(kind) => format!(
                    "Pod {ns}/{name} has condition {kind} matching {action} rule at index {index}"
                ),
                None => continue,
            }
        } else {
            continue;
        };
        return match action {
            "Ignore" => PolicyAction::Ignore,
            "FailJob" => PolicyAction::FailJob(message),
            // Count; FailIndex needs an Indexed Job (rejected at create)
            _ => PolicyAction::Count,
        };
    }
    PolicyAction::Count
}

/// `TEST_ID` values (literal env) of the containers of a pod spec.
fn test_ids(spec: &Value) -> Vec<String> {
    spec.get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("env").and_then(Value::as_array))
        .flatten()
        .filter(|e| e.get("name").and_then(Value::as_str) == Some("TEST_ID"))
        .filter_map(|e| e.get("value").and_then(Value::as_str).map(str::to_string))
        .collect()
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
    pub fn new(store: Arc<Store>, timing: PodTiming, faults: Arc<Faults>) -> Self {
        JobController {
            store,
            _timing: timing,
            jobs_key: Arc::from(keys::JOBS),
            pods_key: Arc::from(keys::PODS),
            faults,
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

    /// Counts the Job's pods into its tracking record, judging each newly failed pod (also an
    /// active one that vanished) by the Job's `podFailurePolicy`; returns (succeeded, failed).
    fn track(&mut self, job: &Value, pods: &[Arc<Value>]) -> (i64, i64) {
        let t = self
            .tracked
            .entry(store::uid_of(job).to_string())
            .or_default();
        let mut present = HashSet::new();
        let mut newly_failed: Vec<Arc<Value>> = Vec::new();
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
                    if !t.failed.contains(&uid) && !t.ignored.contains(&uid) {
                        newly_failed.push(p.clone());
                    }
                }
                _ if !store::is_deleting(p) => {
                    t.active.insert(uid, p.clone());
                }
                _ => {}
            }
        }
        let lost: Vec<String> = t
            .active
            .keys()
            .filter(|u| !present.contains(*u))
            .cloned()
            .collect();
        for uid in lost {
            if let Some(p) = t.active.remove(&uid) {
                newly_failed.push(p);
            }
        }
        for p in newly_failed {
            let uid = store::uid_of(&p).to_string();
            match pod_failure_action(job, &p) {
                PolicyAction::Ignore => {
                    t.ignored.insert(uid);
                    self.faults.record(|s| s.pod_failures_ignored += 1);
                }
                action => {
                    if let PolicyAction::FailJob(msg) = action {
                        t.fail_job.get_or_insert(msg);
                    }
                    t.failed.insert(uid);
                    self.faults.record(|s| s.pod_failures_counted += 1);
                }
            }
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
                if count_as_failed && !t.ignored.contains(&uid) {
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
        let (succeeded, failed_pods) = self.track(job, pods);
        let fail_job = self.tracked.get(&job_uid).and_then(|t| t.fail_job.clone());
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
        let mut finish: Option<(&str, &str, String)> = None;
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
            if let Some(msg) = fail_job {
                self.delete_active(&job_uid, &active, true);
                failed += active.len() as i64;
                self.faults.record(|s| s.jobs_failed_by_policy += 1);
                finish = Some(("Failed", "PodFailurePolicy", msg));
            } else if deadline.is_some_and(|d| age >= d as f64) {
                self.delete_active(&job_uid, &active, true);
                failed += active.len() as i64;
                finish = Some((
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".into(),
                ));
            } else if failed > backoff_limit {
                self.delete_active(&job_uid, &active, true);
                failed += active.len() as i64;
                finish = Some((
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit".into(),
                ));
            } else if succeeded >= completions {
                finish = Some((
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods".into(),
                ));
            } else {
                to_create = (parallelism.min(completions - succeeded) - active.len() as i64).max(0);
                if let Some(d) = deadline {
                    *next = (*next).min(now + Duration::from_secs_f64((d as f64 - age).max(0.05)));
                }
            }
        }
        if suspended && !condition_true(job, "Suspended") {
            events::record(
                &self.store,
                job,
                false,
                "Suspended",
                "Job suspended",
                Source::JobController,
            );
        } else if !suspended && condition_true(job, "Suspended") {
            events::record(
                &self.store,
                job,
                false,
                "Resumed",
                "Job resumed",
                Source::JobController,
            );
        }
        if let Some((kind, reason, message)) = &finish {
            if *kind == "Complete" {
                events::record(
                    &self.store,
                    job,
                    false,
                    "Completed",
                    "Job completed",
                    Source::JobController,
                );
            } else {
                events::record(
                    &self.store,
                    job,
                    true,
                    reason,
                    message,
                    Source::JobController,
                );
            }
        }
        let mut created = 0;
        for _ in 0..to_create {
            let attempt = self.tracked.get(&job_uid).map_or(0, |t| t.created);
            if self.create_pod(job, attempt) {
                created += 1;
                if let Some(t) = self.tracked.get_mut(&job_uid) {
                    t.created += 1;
                }
                self.faults.record(|s| s.pods_created_by_jobs += 1);
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
            let message = message.as_str();
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

    fn create_pod(&self, job: &Value, attempt: u64) -> bool {
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
        for key in [ANN_DURATION, ANN_OUTCOME, ANN_EXIT_CODE] {
            if let Some(v) = annotation(job, key) {
                if meta["annotations"].get(key).is_none() {
                    meta["annotations"][key] = json!(v);
                }
            }
        }
        if let Some(n) = annotation(job, ANN_FAIL_ATTEMPTS).and_then(|v| v.parse::<u64>().ok()) {
            if attempt < n {
                meta["annotations"][ANN_OUTCOME] = json!("fail");
            }
        }
        let spec = tmpl.get("spec").cloned().unwrap_or(json!({}));
        let ids = test_ids(&spec);
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let fault = self.faults.job_pod(name, &ids, attempt);
        if let Some((outcome, code)) = fault.outcome {
            meta["annotations"][ANN_OUTCOME] = json!(outcome.as_str());
            match code.filter(|_| outcome == ScenarioOutcome::Fail) {
                Some(c) => meta["annotations"][ANN_EXIT_CODE] = json!(c.to_string()),
                None => {
                    if let Some(a) = meta["annotations"].as_object_mut() {
                        a.remove(ANN_EXIT_CODE);
                    }
                }
            }
        }
        if fault.preempt {
            meta["annotations"][ANN_PREEMPT] = json!("true");
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
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
        if let Err(e) = admission::default_pod(&mut pod) {
            tracing::warn!(job = name, namespace = ns, error = %e, "cannot create pod for job");
            return false;
        }
        let created = self.store.create(&self.pods_key, pod).is_ok();
        if created {
            events::record(
                &self.store,
                job,
                false,
                "SuccessfulCreate",
                &format!("Created pod: {pod_name}"),
                Source::JobController,
            );
        }
        created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(statuses: Value, init: Value, conditions: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Failed",
            "containerStatuses": statuses, "initContainerStatuses": init, "conditions": conditions}})
    }

    fn term(name: &str, code: i64) -> Value {
        json!({"name": name, "state": {"terminated": {"exitCode": code}}})
    }

    #[test]
    fn pod_failure_policy_rules_in_order() {
        let job = json!({"spec": {"podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [3]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [5]}},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [5]}},
        ]}}});
        let disrupted = pod(
            json!([term("main", 137)]),
            json!([]),
            json!([{"type": "DisruptionTarget", "status": "True"}]),
        );
        assert_eq!(pod_failure_action(&job, &disrupted), PolicyAction::Ignore);
        let code3 = pod(
            json!([term("side", 0), term("main", 3)]),
            json!([]),
            json!([]),
        );
        assert_eq!(
            pod_failure_action(&job, &code3),
            PolicyAction::FailJob(
                "Container main for pod ns/p failed with exit code 3 matching FailJob rule at index 1"
                    .into()
            )
        );
        // exit code 0 never matches, not even NotIn; init containers are checked after
        let init5 = pod(
            json!([term("main", 0)]),
            json!([term("s3-init", 5)]),
            json!([]),
        );
        assert_eq!(
            pod_failure_action(&job, &init5),
            PolicyAction::FailJob(
                "Container s3-init for pod ns/p failed with exit code 5 matching FailJob rule at index 3"
                    .into()
            )
        );
        // a running container (vanished pod) matches no exit code rule
        let running = pod(
            json!([{"name": "main", "state": {"running": {}}}]),
            json!([]),
            json!([]),
        );
        assert_eq!(pod_failure_action(&job, &running), PolicyAction::Count);
        assert_eq!(
            pod_failure_action(&json!({"spec": {}}), &code3),
            PolicyAction::Count
        );
    }
}
