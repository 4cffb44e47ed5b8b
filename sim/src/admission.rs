//! Defaulting and mutating admission on create, as the real API server and Kueue's webhook
//! do it: pod and Job defaults, Job selectors and labels, Kueue's suspension of queued Jobs,
//! Service cluster IPs, Secret `stringData`, namespace and PVC status; and on every write
//! ([`on_write`]) the normalisation of decoding into Go structs (empty `metadata` maps
//! dropped) and the spec defaults again. Below both the API ([`crate::api`] calls
//! [`on_create`] for every create, [`on_write`] for every write) and the controllers, which write to
//! the store directly (the job controller defaults its pods with [`default_pod`], Kueue reads
//! [`QUEUE_LABEL`]); it depends on the store only.

use base64::Engine;
use serde_json::{json, Value};

use crate::store::{keys, Store};

/// The label that hands a Job to Kueue.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";

pub fn random_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

/// RFC 1123 subdomain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        if m.get(key).is_none_or(Value::is_null) {
            m.insert(key.to_string(), v);
        }
    }
}

/// Pod spec defaults (also used for Job templates).
pub fn default_pod_spec(spec: &mut Value, restart: &str) {
    set_default(spec, "restartPolicy", json!(restart));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "serviceAccountName", json!("default"));
    set_default(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "imagePullPolicy", json!("IfNotPresent"));
                set_default(c, "resources", json!({}));
                // requests default to limits
                if let Some(limits) = c
                    .pointer("/resources/limits")
                    .cloned()
                    .and_then(|l| l.as_object().cloned())
                {
                    let res = &mut c["resources"];
                    set_default(res, "requests", json!({}));
                    for (k, v) in limits {
                        set_default(&mut res["requests"], &k, v);
                    }
                }
            }
        }
    }
}

/// QoS class of a pod spec.
fn qos_class(spec: &Value) -> &'static str {
    let cs: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let any = cs.iter().any(|c| {
        c.pointer("/resources/requests")
            .is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty()))
            || c.pointer("/resources/limits")
                .is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty()))
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = cs.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let l = c.pointer(&format!("/resources/limits/{r}"));
            l.is_some() && l == c.pointer(&format!("/resources/requests/{r}"))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Defaults of a new pod (spec defaults, `Pending` status with its QoS class).
pub fn default_pod(obj: &mut Value) -> Result<(), String> {
    if obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        return Err(format!(
            "Pod \"{}\" is invalid: spec.containers: Required value",
            crate::store::name_of(obj)
        ));
    }
    default_pod_spec(&mut obj["spec"], "Always");
    let qos = qos_class(&obj["spec"]);
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    Ok(())
}

/// Validates a Job's `podFailurePolicy` as the real API server does (the parts the sim
/// implements) and defaults `onPodConditions[].status` to `True`.
fn validate_pod_failure_policy(name: &str, job: &mut Value) -> Result<(), String> {
    let invalid = |field: String, value: &str, why: &str| {
        format!("Job.batch \"{name}\" is invalid: {field}: Invalid value: \"{value}\": {why}")
    };
    let restart = job
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if restart != "Never" {
        return Err(invalid(
            "spec.template.spec.restartPolicy".into(),
            restart,
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
    let per_index = job
        .pointer("/spec/backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    let Some(rules) = job
        .pointer_mut("/spec/podFailurePolicy/rules")
        .and_then(Value::as_array_mut)
    else {
        return Err(format!(
            "Job.batch \"{name}\" is invalid: spec.podFailurePolicy.rules: Required value"
        ));
    };
    for (i, rule) in rules.iter_mut().enumerate() {
        let path = format!("spec.podFailurePolicy.rules[{i}]");
        let action = rule.get("action").and_then(Value::as_str).unwrap_or("");
        match action {
            "Count" | "FailJob" | "Ignore" => {}
            "FailIndex" if per_index => {}
            "FailIndex" => {
                return Err(invalid(
                    format!("{path}.action"),
                    action,
                    "requires the backoffLimitPerIndex to be set",
                ))
            }
            other => {
                return Err(format!("Job.batch \"{name}\" is invalid: {path}.action: Unsupported value: \"{other}\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\""))
            }
        }
        let codes = rule.get("onExitCodes").is_some_and(|v| !v.is_null());
        let conds = rule.get("onPodConditions").is_some_and(|v| !v.is_null());
        if codes == conds {
            return Err(format!("Job.batch \"{name}\" is invalid: {path}: Invalid value: specifying one of OnExitCodes and OnPodConditions is required"));
        }
        if codes {
            let op = rule
                .pointer("/onExitCodes/operator")
                .and_then(Value::as_str)
                .unwrap_or("");
            if op != "In" && op != "NotIn" {
                return Err(format!("Job.batch \"{name}\" is invalid: {path}.onExitCodes.operator: Unsupported value: \"{op}\": supported values: \"In\", \"NotIn\""));
            }
            let values = rule
                .pointer("/onExitCodes/values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if values.is_empty() {
                return Err(format!(
                    "Job.batch \"{name}\" is invalid: {path}.onExitCodes.values: Required value"
                ));
            }
            if op == "In" && values.iter().any(|v| v.as_i64() == Some(0)) {
                return Err(format!("Job.batch \"{name}\" is invalid: {path}.onExitCodes.values[{}]: Invalid value: 0: must not be 0 for the In operator", values.iter().position(|v| v.as_i64() == Some(0)).unwrap_or(0)));
            }
        }
        if let Some(patterns) = rule
            .get_mut("onPodConditions")
            .and_then(Value::as_array_mut)
        {
            for p in patterns {
                set_default(p, "status", json!("True"));
            }
        }
    }
    Ok(())
}

/// Defaulting and normalisation of every write (create, update, patch, apply), as the API
/// server's decoding into Go structs does: empty `omitempty` maps and lists of `metadata`
/// (labels, annotations, finalizers, ownerReferences) disappear, and the spec defaults of
/// pods, Job templates and Service ports fill what a patch left out. Idempotent.
pub fn on_write(key: &str, obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
            let empty = match meta.get(field) {
                Some(Value::Object(m)) => m.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                meta.remove(field);
            }
        }
    }
    match key {
        keys::PODS if obj.get("spec").is_some_and(Value::is_object) => {
            default_pod_spec(&mut obj["spec"], "Always")
        }
        keys::JOBS
            if obj
                .pointer("/spec/template/spec")
                .is_some_and(Value::is_object) =>
        {
            default_pod_spec(&mut obj["spec"]["template"]["spec"], "Never")
        }
        keys::SERVICES => {
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    set_default(p, "targetPort", port);
                }
            }
        }
        _ => {}
    }
}

/// Mutates a new object of the resource with store key `key` (`group/plural`) before it is
/// stored. Errors are validation messages (422).
pub fn on_create(_store: &Store, key: &str, obj: &mut Value) -> Result<(), String> {
    match key {
        keys::PODS => {
            default_pod(obj)?;
        }
        keys::JOBS => {
            let name = crate::store::name_of(obj).to_string();
            if obj
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
            {
                return Err(format!("Job.batch \"{name}\" is invalid: spec.template.spec.containers: Required value"));
            }
            let restart = obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("");
            if restart != "Never" && restart != "OnFailure" {
                return Err(format!(
                    "Job.batch \"{name}\" is invalid: spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""
                ));
            }
            if obj
                .pointer("/spec/podFailurePolicy")
                .is_some_and(|v| !v.is_null())
            {
                validate_pod_failure_policy(&name, obj)?;
            }
            let spec = &mut obj["spec"];
            set_default(spec, "completions", json!(1));
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "manualSelector", json!(false));
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            default_pod_spec(&mut spec["template"]["spec"], "Never");
            let queued = obj
                .pointer(&format!(
                    "/metadata/labels/{}",
                    QUEUE_LABEL.replace('/', "~1")
                ))
                .is_some();
            if queued {
                // Kueue's webhook: queued Jobs start suspended until admitted
                obj["spec"]["suspend"] = json!(true);
            }
            // selector and labels use the uid, which the store assigns: a placeholder is
            // replaced by the job controller; kubectl and kube-rs only read them
            let job_labels = json!({"batch.kubernetes.io/job-name": name, "job-name": name});
            let tmpl_meta = &mut obj["spec"]["template"]["metadata"];
            if !tmpl_meta.is_object() {
                *tmpl_meta = json!({});
            }
            set_default(tmpl_meta, "labels", json!({}));
            if let (Some(l), Some(add)) =
                (tmpl_meta["labels"].as_object_mut(), job_labels.as_object())
            {
                for (k, v) in add {
                    l.insert(k.clone(), v.clone());
                }
            }
            set_default(
                &mut obj["spec"],
                "selector",
                json!({"matchLabels": {"batch.kubernetes.io/job-name": name}}),
            );
            obj["status"] = json!({});
        }
        keys::SERVICES => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                *spec = json!({});
            }
            set_default(spec, "type", json!("ClusterIP"));
            let ip = format!(
                "10.96.{}.{}",
                rand::random_range(0..255u8),
                rand::random_range(1..255u8)
            );
            set_default(spec, "clusterIP", json!(ip.clone()));
            set_default(spec, "clusterIPs", json!([ip]));
            set_default(spec, "sessionAffinity", json!("None"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    set_default(p, "targetPort", port);
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        keys::SECRETS => {
            if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
                set_default(obj, "data", json!({}));
                for (k, v) in sd {
                    let s = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                }
                if let Some(m) = obj.as_object_mut() {
                    m.remove("stringData");
                }
            }
            set_default(obj, "type", json!("Opaque"));
        }
        keys::NAMESPACES => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let name = crate::store::name_of(obj).to_string();
            let labels = &mut obj["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        keys::PVCS => {
            let size = obj
                .pointer("/spec/resources/requests/storage")
                .cloned()
                .unwrap_or(json!("1Gi"));
            obj["status"] = json!({"phase": "Bound", "accessModes": obj.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])), "capacity": {"storage": size}});
        }
        _ => {}
    }
    Ok(())
}
