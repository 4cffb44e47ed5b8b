//! Job manifests: one `batch/v1` Job per configuration × run number (upstream section 4.4),
//! with our fixes: collision-free names, an init container that fails loudly when a required
//! file is missing, S3 credentials from a Secret, secondary containers as native sidecars with
//! their resources and the `.vast` env.

use k8s_openapi::api::batch::v1::Job;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::cluster_config::{MC_IMAGE, S3_ENDPOINT, S3_SECRET};
use super::kueue::LOCAL_QUEUE;
use super::{ManifestError, MANAGED_BY, MANAGED_BY_LABEL};
use crate::project::configs::Configuration;
use crate::project::resources::{resolve_resources, ResolvedResources};
use crate::project::vast_file::Execution;

/// Label every Job and pod of vast carries.
pub const JOBGROUP: &str = "scenario-runs";
/// Seconds a finished Job is kept.
pub const TTL_SECONDS: i32 = 60;

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
    let prefix: String = config
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .take(30)
        .collect();
    let prefix = prefix.trim_matches('-');
    let sep = if prefix.is_empty() { "" } else { "-" };
    format!(
        "r{}-{prefix}{sep}{}-{run}",
        hex_hash(run_id, 8),
        hex_hash(config, 6)
    )
}

/// The Job of attempt `attempt` (1-based) of the run whose first Job is `base`: `base` itself,
/// then `base-a<k>` (a [`job_name`] is at most 58 characters, so `-a99` still fits in 63).
pub fn attempt_job_name(base: &str, attempt: u32) -> String {
    if attempt <= 1 {
        base.to_string()
    } else {
        format!("{base}-a{attempt}")
    }
}

/// The first Job and the attempt number of a Job name ([`attempt_job_name`] reversed).
pub fn split_attempt(name: &str) -> (&str, u32) {
    if let Some((base, k)) = name.rsplit_once("-a") {
        if let Ok(k) = k.parse::<u32>() {
            if k >= 2 && !k.to_string().starts_with('0') {
                return (base, k);
            }
        }
    }
    (name, 1)
}

/// Full readable name (pod annotation `job-name-full`).
pub fn job_full_name(run_id: &str, config: &str, run: u32) -> String {
    format!("{run_id}-{}-{run}", config.replace(['/', '_'], "-"))
}

fn resources_json(r: &ResolvedResources) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(c) = &r.cpu {
        m.insert("cpu".into(), json!(c));
    }
    if let Some(mem) = &r.memory {
        m.insert("memory".into(), json!(mem));
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

/// The Job for `config` × `run`.
pub fn render_job(
    ctx: &JobContext<'_>,
    config: &Configuration,
    run: u32,
) -> Result<Job, ManifestError> {
    let ex = ctx.execution;
    let main_res = resolve_resources(&ex.resources, ctx.context)?;
    let run_label = label_safe(ctx.run_id);
    let name = job_name(ctx.run_id, &config.name, run);
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
            "resources": resources_json(&res),
            "securityContext": security,
            "volumeMounts": mounts(true),
        }));
    }

    let labels = json!({
        "jobgroup": JOBGROUP,
        "run-id": run_label,
        "kueue.x-k8s.io/queue-name": LOCAL_QUEUE,
        MANAGED_BY_LABEL: MANAGED_BY,
    });
    let mut spec = json!({
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": TTL_SECONDS,
        "template": {
            "metadata": {
                "labels": {"jobgroup": JOBGROUP, "run-id": run_label, MANAGED_BY_LABEL: MANAGED_BY},
                "annotations": {"job-name-full": job_full_name(ctx.run_id, &config.name, run)},
            },
            "spec": {
                "restartPolicy": "Never",
                "initContainers": init_containers,
                "containers": [{
                    "name": "robovast",
                    "image": ex.image,
                    "command": ["/bin/bash", "/config/entrypoint.sh"],
                    "env": env,
                    "resources": resources_json(&main_res),
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
    serde_json::from_value(job).map_err(|e| ManifestError::Template {
        config: name,
        message: e.to_string(),
    })
}

/// MERGE-SHIM: replaced by the manifests branch.
pub fn render_job_attempt(
    ctx: &JobContext<'_>,
    config: &Configuration,
    run: u32,
    attempt: u32,
) -> Result<Job, ManifestError> {
    let mut j = render_job(ctx, config, run)?;
    let base = job_name(ctx.run_id, &config.name, run);
    j.metadata.name = Some(attempt_job_name(&base, attempt));
    Ok(j)
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
}
