//! Job manifests: one `batch/v1` Job per configuration × run number (upstream section 4.4),
//! with our fixes: collision-free names, an init container that fails loudly when a required
//! file is missing, S3 credentials from a Secret, secondary containers as native sidecars with
//! their resources and the `.vast` env.
//!
//! Failures (Kubernetes ≥ 1.31 `podFailurePolicy`, see [`pod_failure_policy`]): a pod disrupted
//! by the cluster (preemption, eviction, node drain: condition `DisruptionTarget`) is replaced
//! without counting; the scenario's own failure ([`is_scenario_failure`]) fails the Job at once;
//! any other pod failure (OOM kill, SIGTERM, failed upload, failed `s3-init`) is retried up to
//! `.vast` `execution.retries` times (`backoffLimit`).
//!
//! Attempts: a Job re-created by vast after it failed is attempt k ≥ 2, named
//! [`job_name_attempt`] and labelled [`ATTEMPT_LABEL`]; [`base_job_name`] maps it back.
//!
//! Placement: `.vast` `node_selector`, `tolerations`, `priority_class` and `gpu` (resolved for
//! the `--context`), merged with the cluster's own (gcp `spot=true`: [`SPOT_LABEL`]).

use k8s_openapi::api::batch::v1::Job;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::cluster_config::{MC_IMAGE, S3_ENDPOINT, S3_SECRET};
use super::kueue::LOCAL_QUEUE;
use super::{ManifestError, MANAGED_BY, MANAGED_BY_LABEL};
use crate::project::configs::Configuration;
use crate::project::resources::{
    resolve_placement, resolve_resources, ResolvedPlacement, ResolvedResources,
};
use crate::project::vast_file::Execution;

/// Label every Job and pod of vast carries.
pub const JOBGROUP: &str = "scenario-runs";
/// Seconds a finished Job is kept.
pub const TTL_SECONDS: i32 = 60;
/// The main (scenario) container of every Job's pod.
pub const MAIN_CONTAINER: &str = "robovast";
/// Label of a Job and its pods: the attempt number (`"1"`, `"2"`, …). Always set, so a label
/// selector can pick one attempt; a Job without it (older vast) is attempt 1.
pub const ATTEMPT_LABEL: &str = "vast.dev/attempt";
/// GKE's node label of spot VMs (and the key of their taint).
pub const SPOT_LABEL: &str = "cloud.google.com/gke-spot";
/// Exit status of the entrypoint when the scenario succeeded but its results could not be
/// uploaded (`EX_TEMPFAIL`): an infrastructure failure.
pub const EXIT_UPLOAD_FAILED: i32 = 75;
/// Exit codes of the main container that mean "the infrastructure failed", not the scenario:
/// [`EXIT_UPLOAD_FAILED`], 137 (SIGKILL: OOM kill, or the kubelet's kill after the grace
/// period) and 143 (SIGTERM: the entrypoint's trap when the pod is stopped). 0 is listed in
/// the pod failure policy too: a failed pod whose scenario succeeded is not the scenario's
/// failure.
pub const INFRASTRUCTURE_EXIT_CODES: [i32; 3] = [EXIT_UPLOAD_FAILED, 137, 143];

/// Whether the main container's `exit_code` is the scenario's own failure (the Job fails at
/// once, never retried): any non-zero code except [`INFRASTRUCTURE_EXIT_CODES`]. The
/// entrypoint exits with the scenario's status (`scenario_execution_ros`: 1 on a failed
/// scenario), 1 for a missing PRE_/POST_COMMAND, 126/127 for a broken image, 128+n when the
/// scenario process died of signal n (a crash); SIGINT (130) never comes from Kubernetes.
pub fn is_scenario_failure(exit_code: i32) -> bool {
    exit_code != 0 && !INFRASTRUCTURE_EXIT_CODES.contains(&exit_code)
}

/// The Jobs' `podFailurePolicy`, rules in order (the first match wins):
/// 1. `Ignore` a pod with condition `DisruptionTarget=True` (preemption of a spot VM,
///    eviction, node drain, Kueue or priority preemption): it is replaced without counting
///    towards `backoffLimit`;
/// 2. `FailJob` when the main container exited with a code not in `[0]` +
///    [`INFRASTRUCTURE_EXIT_CODES`] ([`is_scenario_failure`]): re-running a failed scenario
///    gives the same failure.
///
/// Everything else counts towards `backoffLimit` (`.vast` `execution.retries`): an OOM kill,
/// a SIGTERM without the disruption condition, a failed upload, a failed `s3-init` (the rule
/// names the main container only, so init failures are retried).
pub fn pod_failure_policy() -> Value {
    let mut not_in = vec![0];
    not_in.extend(INFRASTRUCTURE_EXIT_CODES);
    json!({"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": MAIN_CONTAINER, "operator": "NotIn", "values": not_in}},
    ]})
}

/// Everything a Job depends on besides the configuration and run number.
#[derive(Debug, Clone)]
pub struct JobContext<'a> {
    pub run_id: &'a str,
    pub namespace: &'a str,
    pub execution: &'a Execution,
    /// `--context/-x` (per-cluster resources).
    pub context: Option<&'a str>,
    /// Number of Jobs of the run (annotation `total-job-num`).
    pub total_jobs: usize,
    /// `--log-tree/-t`.
    pub log_tree: bool,
    /// The cluster setup asked for spot VMs (gcp `spot=true`): every pod selects and tolerates
    /// GKE's spot nodes.
    pub spot: bool,
}

/// `run-id` label value: lowercase, `_` → `-`, only alnum/`-`/`.`, at most 63.
pub fn label_safe(s: &str) -> String {
    let v: String = s
        .to_lowercase()
        .replace('_', "-")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(63)
        .collect();
    v.trim_end_matches(['-', '.']).to_string()
}

fn hex_hash(s: &str, n: usize) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))[..n].to_string()
}

/// Job name for (run id, config, run number): `r<8 hex of sha256(run id)>-<config, at most 30
/// chars><6 hex of sha256(config)>-<n>`, at most 63 characters. Different runs differ in the
/// run-id hash (the full id, timestamp and random suffix included); different configs in the
/// config hash.
pub fn job_name(run_id: &str, config: &str, run: u32) -> String {
    name_with(run_id, config, run, 30, "")
}

/// `r<hash>-<prefix of at most max_prefix chars><hash>-<run><suffix>`.
fn name_with(run_id: &str, config: &str, run: u32, max_prefix: usize, suffix: &str) -> String {
    let prefix: String = config
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .take(max_prefix)
        .collect();
    let prefix = prefix.trim_matches('-');
    let sep = if prefix.is_empty() { "" } else { "-" };
    format!(
        "r{}-{prefix}{sep}{}-{run}{suffix}",
        hex_hash(run_id, 8),
        hex_hash(config, 6)
    )
}

/// Name of attempt `attempt` of a Job: attempt 0 or 1 is [`job_name`]; attempt k ≥ 2 is
/// `job_name(..)` + `-a<k>`, a DNS label of at most 63 characters. Only when that would be
/// longer (a run number and an attempt with 13 digits together, e.g. attempt ≥ 1000 of run
/// u32::MAX) is the config prefix shortened, and then [`base_job_name`] of it is not
/// `job_name(..)`; every attempt up to 999 of any run keeps the full base name.
pub fn job_name_attempt(run_id: &str, config: &str, run: u32, attempt: u32) -> String {
    if attempt <= 1 {
        return job_name(run_id, config, run);
    }
    let suffix = format!("-a{attempt}");
    let full = name_with(run_id, config, run, 30, &suffix);
    let over = full.len().saturating_sub(63);
    if over == 0 {
        return full;
    }
    name_with(run_id, config, run, 30usize.saturating_sub(over), &suffix)
}

/// Splits a Job name into its base (attempt 1's name) and attempt number: `<base>-a<k>` with
/// k ≥ 2 gives `(base, k)`, any other name `(name, 1)`. Unambiguous because a base name ends
/// with `-<run number>`, never with `-a<digits>`.
pub fn base_job_name(name: &str) -> (&str, u32) {
    let Some((base, k)) = name.rsplit_once("-a") else {
        return (name, 1);
    };
    let base_ends_with_run = base
        .rsplit_once('-')
        .is_some_and(|(_, run)| !run.is_empty() && run.bytes().all(|b| b.is_ascii_digit()));
    let canonical = k.bytes().all(|b| b.is_ascii_digit()) && !k.starts_with('0');
    match k.parse::<u32>() {
        Ok(n) if n >= 2 && canonical && base_ends_with_run => (base, n),
        _ => (name, 1),
    }
}

/// The Job of attempt `attempt` of the run whose first Job is `base` (a [`job_name`]): `base`
/// itself, then `base-a<k>`; equal to [`job_name_attempt`] for every attempt up to 999 (the run
/// record names attempts from the first Job's name).
pub fn attempt_job_name(base: &str, attempt: u32) -> String {
    if attempt <= 1 {
        base.to_string()
    } else {
        format!("{base}-a{attempt}")
    }
}

/// Full readable name (pod annotation `job-name-full`).
pub fn job_full_name(run_id: &str, config: &str, run: u32) -> String {
    format!("{run_id}-{}-{run}", config.replace(['/', '_'], "-"))
}

/// Requests = limits (`gpu`: `nvidia.com/gpu`, omitted when 0).
fn resources_json(r: &ResolvedResources, gpu: u32) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(c) = &r.cpu {
        m.insert("cpu".into(), json!(c));
    }
    if let Some(mem) = &r.memory {
        m.insert("memory".into(), json!(mem));
    }
    if gpu > 0 {
        m.insert("nvidia.com/gpu".into(), json!(gpu.to_string()));
    }
    if m.is_empty() {
        json!({})
    } else {
        json!({"requests": m.clone(), "limits": m})
    }
}

fn secret_env(name: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": key}}})
}

fn mounts(config_read_only: bool) -> Value {
    json!([
        {"name": "config", "mountPath": "/config", "readOnly": config_read_only},
        {"name": "out", "mountPath": "/out"},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "ipc", "mountPath": "/ipc"},
        {"name": "tmp", "mountPath": "/tmp"},
    ])
}

/// The init container's script: every file the run needs must arrive, or it exits 1 naming it.
/// `_config/` always exists in the bucket (it holds `configurations.yaml`) and carries the test
/// files, which land under `/config/<relpath>`.
pub fn init_script(config: &Configuration) -> String {
    let mut s = String::from(
        "set -eu\n\
fail() { echo \"vast: $1\" >&2; exit 1; }\n\
mc alias set vast \"$S3_ENDPOINT\" \"$S3_ACCESS_KEY\" \"$S3_SECRET_KEY\" >/dev/null || fail \"cannot reach S3 at $S3_ENDPOINT\"\n\
fetch() { mc cp --quiet \"vast/$S3_BUCKET/$1\" \"$2\" >/dev/null || fail \"required file s3://$S3_BUCKET/$1 is missing or unreadable\"; }\n\
fetch entrypoint.sh /config/entrypoint.sh\n\
fetch secondary_entrypoint.sh /config/secondary_entrypoint.sh\n\
fetch collect_sysinfo.py /config/collect_sysinfo.py\n\
fetch scenario.osc /config/scenario.osc\n",
    );
    s.push_str("mc mirror --quiet \"vast/$S3_BUCKET/_config/\" /config/ >/dev/null || fail \"cannot copy s3://$S3_BUCKET/_config/\"\n");
    if !config.parameters.is_empty() {
        s.push_str(&format!(
            "fetch '{}/scenario.config' /config/scenario.config\n",
            config.name
        ));
    }
    s.push_str("chmod +x /config/*.sh /config/*.py\n");
    s
}

/// The pod template's placement fields: the cluster's (spot) merged with the `.vast` ones;
/// the `.vast` `node_selector` wins on the same key, a toleration is listed once.
fn placement_json(spot: bool, p: &ResolvedPlacement) -> serde_json::Map<String, Value> {
    let mut selector = serde_json::Map::new();
    let mut tolerations: Vec<Value> = Vec::new();
    if spot {
        selector.insert(SPOT_LABEL.into(), json!("true"));
        tolerations.push(
            json!({"key": SPOT_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}),
        );
    }
    for (k, v) in &p.node_selector {
        selector.insert(k.clone(), json!(v));
    }
    for t in &p.tolerations {
        let mut o = serde_json::Map::new();
        for (k, v) in [
            ("key", &t.key),
            ("operator", &t.operator),
            ("value", &t.value),
            ("effect", &t.effect),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), json!(v));
            }
        }
        if let Some(s) = t.toleration_seconds {
            o.insert("tolerationSeconds".into(), json!(s));
        }
        let o = Value::Object(o);
        if !tolerations.contains(&o) {
            tolerations.push(o);
        }
    }
    let mut out = serde_json::Map::new();
    if !selector.is_empty() {
        out.insert("nodeSelector".into(), Value::Object(selector));
    }
    if !tolerations.is_empty() {
        out.insert("tolerations".into(), Value::Array(tolerations));
    }
    if let Some(pc) = &p.priority_class {
        out.insert("priorityClassName".into(), json!(pc));
    }
    out
}

/// The Job for `config` × `run` (attempt 1: [`render_job_attempt`]).
pub fn render_job(
    ctx: &JobContext<'_>,
    config: &Configuration,
    run: u32,
) -> Result<Job, ManifestError> {
    render_job_attempt(ctx, config, run, 1)
}

/// Attempt `attempt` (≥ 1; 0 is taken as 1) of the Job for `config` × `run`: named
/// [`job_name_attempt`], the Job and its pod template labelled [`ATTEMPT_LABEL`].
pub fn render_job_attempt(
    ctx: &JobContext<'_>,
    config: &Configuration,
    run: u32,
    attempt: u32,
) -> Result<Job, ManifestError> {
    let job = render_job_value(ctx, config, run, attempt)?;
    let name = job_name_attempt(ctx.run_id, &config.name, run, attempt.max(1));
    serde_json::from_value(job).map_err(|e| ManifestError::Template {
        config: name,
        message: e.to_string(),
    })
}

/// [`render_job_attempt`] as the JSON document sent to the API server, without the typed
/// round trip: what `run`'s create-job step serialises and POSTs (the typed form checks the
/// same document in `prepare-run` and the tests).
pub fn render_job_value(
    ctx: &JobContext<'_>,
    config: &Configuration,
    run: u32,
    attempt: u32,
) -> Result<serde_json::Value, ManifestError> {
    let attempt = attempt.max(1);
    let ex = ctx.execution;
    let main_res = resolve_resources(&ex.resources, ctx.context)?;
    let placement = resolve_placement(&ex.placement, ctx.context)?;
    let run_label = label_safe(ctx.run_id);
    let name = job_name_attempt(ctx.run_id, &config.name, run, attempt);
    let prefix = format!("{}/{run}", config.name);

    let mut env = vec![
        json!({"name": "AVAILABLE_CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}),
        json!({"name": "AVAILABLE_MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}),
    ];
    let user_env: Vec<Value> = ex
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    env.extend(user_env.iter().cloned());
    env.push(json!({"name": "TEST_ID", "value": format!("{}-{run}", config.name)}));
    env.push(json!({"name": "ROS_LOG_DIR", "value": "/out/logs"}));
    let s3_env = vec![
        json!({"name": "S3_ENDPOINT", "value": S3_ENDPOINT}),
        json!({"name": "S3_BUCKET", "value": run_label}),
        secret_env("S3_ACCESS_KEY", "access-key"),
        secret_env("S3_SECRET_KEY", "secret-key"),
    ];
    env.extend(s3_env.iter().cloned());
    env.push(json!({"name": "S3_PREFIX", "value": prefix}));
    if let Some(p) = &ex.pre_command {
        env.push(json!({"name": "PRE_COMMAND", "value": p}));
    }
    if let Some(p) = &ex.post_command {
        env.push(json!({"name": "POST_COMMAND", "value": p}));
    }
    if ctx.log_tree {
        env.push(json!({"name": "SCENARIO_EXECUTION_PARAMETERS", "value": "-t"}));
    }

    let security = json!({"runAsUser": ex.run_as_user});
    let mut init_containers = vec![json!({
        "name": "s3-init",
        "image": MC_IMAGE,
        "command": ["sh", "-c", init_script(config)],
        "env": s3_env,
        "volumeMounts": [{"name": "config", "mountPath": "/config"}],
    })];
    // Secondary containers: native sidecars (restartPolicy Always) so they end with the main one.
    for sc in &ex.secondary_containers {
        let res = resolve_resources(&sc.resources, ctx.context)?;
        let mut env = vec![
            json!({"name": "CONTAINER_NAME", "value": sc.name}),
            json!({"name": "ROS_LOG_DIR", "value": "/out/logs"}),
        ];
        env.extend(user_env.iter().cloned());
        init_containers.push(json!({
            "name": sc.name,
            "image": ex.image,
            "restartPolicy": "Always",
            "command": ["/bin/bash", "/config/secondary_entrypoint.sh"],
            "env": env,
            "resources": resources_json(&res, 0),
            "securityContext": security,
            "volumeMounts": mounts(true),
        }));
    }

    let attempt_label = attempt.to_string();
    let labels = json!({
        "jobgroup": JOBGROUP,
        "run-id": run_label,
        "kueue.x-k8s.io/queue-name": LOCAL_QUEUE,
        MANAGED_BY_LABEL: MANAGED_BY,
        ATTEMPT_LABEL: attempt_label,
    });
    let mut spec = json!({
        "backoffLimit": ex.retries,
        "podFailurePolicy": pod_failure_policy(),
        "ttlSecondsAfterFinished": TTL_SECONDS,
        "template": {
            "metadata": {
                "labels": {
                    "jobgroup": JOBGROUP,
                    "run-id": run_label,
                    MANAGED_BY_LABEL: MANAGED_BY,
                    ATTEMPT_LABEL: attempt_label,
                },
                "annotations": {"job-name-full": job_full_name(ctx.run_id, &config.name, run)},
            },
            "spec": {
                "restartPolicy": "Never",
                "initContainers": init_containers,
                "containers": [{
                    "name": MAIN_CONTAINER,
                    "image": ex.image,
                    "command": ["/bin/bash", "/config/entrypoint.sh"],
                    "env": env,
                    "resources": resources_json(&main_res, placement.gpu),
                    "securityContext": security,
                    "volumeMounts": mounts(true),
                }],
                "volumes": [
                    {"name": "config", "emptyDir": {}},
                    {"name": "out", "emptyDir": {}},
                    {"name": "ipc", "emptyDir": {}},
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                ],
            },
        },
    });
    if let Some(t) = ex.timeout {
        spec["activeDeadlineSeconds"] = json!(t);
    }
    if let Some(pod) = spec["template"]["spec"].as_object_mut() {
        pod.extend(placement_json(ctx.spot, &placement));
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ctx.namespace,
            "labels": labels,
            "annotations": {"total-job-num": ctx.total_jobs.to_string()},
        },
        "spec": spec,
    });
    Ok(job)
}

/// All Jobs of a run, run-number-major (every config for run 0, then run 1, …).
pub fn render_jobs(
    ctx: &JobContext<'_>,
    configs: &[Configuration],
    runs: u32,
) -> Result<Vec<Job>, ManifestError> {
    let mut out = Vec::with_capacity(configs.len() * runs as usize);
    for run in 0..runs {
        for c in configs {
            out.push(render_job(ctx, c, run)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_distinct() {
        let a = job_name("run-2026-11-28-034512-k3f9", "test-1-1", 0);
        assert!(
            a.starts_with('r') && a.contains("-test-1-1") && a.ends_with("-0"),
            "{a}"
        );
        assert_ne!(a, job_name("run-2026-11-28-034512-k3f8", "test-1-1", 0));
        assert_ne!(a, job_name("run-2026-11-29-034512-k3f9", "test-1-1", 0));
        let long = "a".repeat(40);
        let b = job_name("run-2026-11-28-034512-k3f9", &long, u32::MAX);
        assert!(b.len() <= 63, "{b} ({})", b.len());
        assert_ne!(
            job_name("r", &format!("{long}-x"), 1),
            job_name("r", &format!("{long}-y"), 1),
            "configs sharing a long prefix still differ"
        );
        let valid = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        assert!(valid(&a) && valid(&b));
        assert_eq!(label_safe("Run_2026.x!"), "run-2026.x");
    }

    use crate::project::vast_file::is_dns_label as dns_label;

    #[test]
    fn attempt_names_round_trip() {
        let id = "run-2026-11-28-034512-k3f9";
        let base = job_name(id, "test-1-1", 3);
        assert_eq!(job_name_attempt(id, "test-1-1", 3, 1), base);
        assert_eq!(job_name_attempt(id, "test-1-1", 3, 0), base);
        let a2 = job_name_attempt(id, "test-1-1", 3, 2);
        assert_eq!(a2, format!("{base}-a2"));
        assert_eq!(base_job_name(&a2), (base.as_str(), 2));
        assert_eq!(base_job_name(&base), (base.as_str(), 1));
        let long = "Very_Long-Config.Name-".repeat(5);
        let dashes = format!("{}x", "-".repeat(40));
        for config in ["test-1-1", long.as_str(), "a", "-", dashes.as_str()] {
            for run in [0, 7, u32::MAX] {
                for attempt in [1, 2, 11, 999, 1000, u32::MAX] {
                    let n = job_name_attempt(id, config, run, attempt);
                    assert!(dns_label(&n), "{n} ({})", n.len());
                    let (b, k) = base_job_name(&n);
                    assert_eq!(k, attempt, "{n}");
                    if attempt <= 999 {
                        assert_eq!(b, job_name(id, config, run), "{n}");
                    }
                }
            }
        }
        // The longest case shortens the config prefix and still differs per config.
        let x = job_name_attempt(id, &format!("{long}x"), u32::MAX, u32::MAX);
        let y = job_name_attempt(id, &format!("{long}y"), u32::MAX, u32::MAX);
        assert!(x.len() <= 63 && x != y, "{x} {y}");
        // Names that are not attempts.
        for n in [
            "r1-x-a2",
            "r1-x-0-a1",
            "r1-x-0-a02",
            "r1-x-0-a+2",
            "r1-x-0-a",
            "plain",
        ] {
            assert_eq!(base_job_name(n), (n, 1), "{n}");
        }
        assert_eq!(base_job_name("r1-x-0-a10"), ("r1-x-0", 10));
    }

    #[test]
    fn exit_codes_and_failure_policy() {
        for c in [1, 2, 3, 126, 127, 130, 134, 139] {
            assert!(is_scenario_failure(c), "{c}");
        }
        for c in [0, EXIT_UPLOAD_FAILED, 137, 143] {
            assert!(!is_scenario_failure(c), "{c}");
        }
        let p = pod_failure_policy();
        assert_eq!(p["rules"][0]["action"], "Ignore");
        assert_eq!(
            p["rules"][0]["onPodConditions"],
            json!([{"type": "DisruptionTarget", "status": "True"}])
        );
        assert_eq!(
            p["rules"][1],
            json!({"action": "FailJob", "onExitCodes": {"containerName": "robovast", "operator": "NotIn", "values": [0, 75, 137, 143]}})
        );
    }

    fn render(vast: &str, context: Option<&str>, spot: bool, attempt: u32) -> Value {
        let text = format!(
            "version: 1\nexecution:\n  image: i:1\n  runs: 1\n  scenario_file: s.osc\n{vast}"
        );
        let v = crate::project::VastFile::parse(std::path::Path::new("x.vast"), &text).unwrap();
        let ctx = JobContext {
            run_id: "run-1",
            namespace: "ns",
            execution: &v.execution,
            context,
            total_jobs: 1,
            log_tree: false,
            spot,
        };
        let c = Configuration {
            name: "c".into(),
            entry: "c".into(),
            parameters: Vec::new(),
        };
        serde_json::to_value(render_job_attempt(&ctx, &c, 0, attempt).unwrap()).unwrap()
    }

    /// The JSON create-job POSTs is exactly the typed Job's serialisation: nothing the typed
    /// round trip used to normalise (numbers, empty fields, unknown keys) differs.
    #[test]
    fn the_sent_document_is_the_typed_jobs() {
        let vast_files = [
            "",
            "  timeout: 60\n  retries: 0\n  env:\n  - A: \"1\"\n  resources:\n    cpu: 2\n    memory: 3Gi\n  node_selector:\n    pool: spot\n  gpu: 1\n",
            "  secondary_containers:\n  - side:\n      resources: {cpu: 1, memory: 1Gi}\n  pre_command: /config/p.sh\n",
        ];
        for extra in vast_files {
            for (spot, attempt) in [(false, 1), (true, 3)] {
                let text = format!(
                    "version: 1\nexecution:\n  image: i:1\n  runs: 1\n  scenario_file: s.osc\n{extra}"
                );
                let v = crate::project::VastFile::parse(std::path::Path::new("x.vast"), &text)
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                let ctx = JobContext {
                    run_id: "run-1",
                    namespace: "ns",
                    execution: &v.execution,
                    context: None,
                    total_jobs: 4,
                    log_tree: spot,
                    spot,
                };
                let c = Configuration {
                    name: "c".into(),
                    entry: "c".into(),
                    parameters: Vec::new(),
                };
                let typed = serde_json::to_value(render_job_attempt(&ctx, &c, 2, attempt).unwrap())
                    .unwrap();
                let sent = render_job_value(&ctx, &c, 2, attempt).unwrap();
                assert_eq!(sent, typed, "{extra}");
            }
        }
    }

    #[test]
    fn retries_attempt_label_and_policy_in_the_job() {
        let j = render("", None, false, 1);
        assert_eq!(j["spec"]["backoffLimit"], 2);
        assert_eq!(j["spec"]["podFailurePolicy"], pod_failure_policy());
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(j["metadata"]["labels"][ATTEMPT_LABEL], "1");
        assert!(j["spec"].get("activeDeadlineSeconds").is_none());
        let pod = &j["spec"]["template"]["spec"];
        for k in ["nodeSelector", "tolerations", "priorityClassName"] {
            assert!(pod.get(k).is_none(), "{k}");
        }
        assert_eq!(pod["containers"][0]["resources"], json!({}));
        let j = render("  retries: 0\n  timeout: 600\n", None, false, 3);
        assert_eq!(j["spec"]["backoffLimit"], 0);
        assert_eq!(j["spec"]["activeDeadlineSeconds"], 600);
        assert_eq!(j["metadata"]["labels"][ATTEMPT_LABEL], "3");
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"][ATTEMPT_LABEL],
            "3"
        );
        assert_eq!(
            j["metadata"]["name"],
            format!("{}-a3", job_name("run-1", "c", 0))
        );
    }

    #[test]
    fn spot_merges_with_the_vast_placement() {
        let j = render("", None, true, 1);
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"], json!({SPOT_LABEL: "true"}));
        let spot_toleration = json!({"key": SPOT_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"});
        assert_eq!(pod["tolerations"], json!([spot_toleration]));
        // The .vast node_selector wins on the same key; an identical toleration is listed once.
        let vast = "  node_selector: {cloud.google.com/gke-spot: \"false\", pool: sim}\n  tolerations:\n    - {key: cloud.google.com/gke-spot, operator: Equal, value: true, effect: NoSchedule}\n    - {key: gpu, operator: Exists}\n  priority_class: low\n  gpu: 2\n  resources: {cpu: 2}\n";
        let j = render(vast, None, true, 1);
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(
            pod["nodeSelector"],
            json!({SPOT_LABEL: "false", "pool": "sim"})
        );
        assert_eq!(
            pod["tolerations"],
            json!([spot_toleration, {"key": "gpu", "operator": "Exists"}])
        );
        assert_eq!(pod["priorityClassName"], "low");
        let want = json!({"cpu": "2", "nvidia.com/gpu": "2"});
        assert_eq!(
            pod["containers"][0]["resources"],
            json!({"requests": want, "limits": want})
        );
    }
}
