//! Failure evidence that outlives the Job's TTL: when a run's Job ends `failed` or `lost`,
//! its reason is refined from the Job's pods ([`super::runs::refine`]: OOMKilled, preempted,
//! an init container's exit code) and a text file with the reason, the exit code, each pod's
//! state and the last [`LOG_LINES`] lines of each container's log is written to the run's
//! bucket beside its results (`<config>/<n>/logs/vast-failure.txt`; attempt k ≥ 2:
//! `vast-failure-a<k>.txt`), so `download` brings it home, and its key is kept in the run's
//! record (`runs show`, `monitor --json`). Used by `run --follow`, `wait` and `monitor`.
//!
//! Gathering is best effort: a pod that is gone or a log that cannot be read is noted in the
//! file, never an error of the caller.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::runs::{refine, JobRecord};
use crate::cluster::runs::{job_pods, log_tail};
use crate::cluster::s3;
use crate::manifests::job::base_job_name;

/// Lines of each container's log kept.
pub const LOG_LINES: i64 = 200;

/// The results prefix of a Job in its bucket (`<config>/<n>`: the main container's
/// `S3_PREFIX`).
pub fn results_prefix(job: &Job) -> Option<String> {
    let spec = job.spec.as_ref()?.template.spec.as_ref()?;
    spec.containers.iter().find_map(|c| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == "S3_PREFIX")
            .and_then(|e| e.value.clone())
    })
}

/// The evidence file's key for Job `job_name` under `prefix`.
pub fn evidence_key(prefix: &str, job_name: &str) -> String {
    match base_job_name(job_name).1 {
        1 => format!("{prefix}/logs/vast-failure.txt"),
        k => format!("{prefix}/logs/vast-failure-a{k}.txt"),
    }
}

/// Refines `rec` from the Job's pods and returns (key, text) of its evidence file (None when
/// the Job carries no results prefix).
pub async fn gather(
    client: &kube::Client,
    namespace: &str,
    job: &Job,
    rec: &mut JobRecord,
) -> Option<(String, String)> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let pods = match job_pods(client, namespace, &name).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("reading the pods of Job '{name}': {e}");
            Vec::new()
        }
    };
    refine(rec, &pods);
    let prefix = results_prefix(job)?;
    let mut text = format!(
        "vast failure evidence\njob: {name}\noutcome: {}\nreason: {}\nexit code: {}\nrecorded: {}\n",
        rec.outcome.as_str(),
        rec.reason.as_deref().unwrap_or("unknown"),
        rec.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into()),
        jiff::Timestamp::now(),
    );
    if pods.is_empty() {
        text.push_str("\nno pod of this Job exists any more (deleted before it was seen)\n");
    }
    // The last three pods: the failure and the ones just before it.
    for pod in pods.iter().rev().take(3).rev() {
        text.push_str(&describe_pod(pod));
        let pname = pod.metadata.name.clone().unwrap_or_default();
        for c in containers(pod) {
            text.push_str(&format!(
                "\n--- log of {pname}/{c} (last {LOG_LINES} lines) ---\n"
            ));
            match log_tail(client, namespace, &pname, &c, LOG_LINES).await {
                Ok(l) if l.is_empty() => text.push_str("(empty)\n"),
                Ok(l) => {
                    text.push_str(&l);
                    if !l.ends_with('\n') {
                        text.push('\n');
                    }
                }
                Err(e) => text.push_str(&format!("(log unavailable: {e})\n")),
            }
        }
    }
    Some((evidence_key(&prefix, &name), text))
}

fn containers(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| c.name.clone())
        .collect()
}

fn describe_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let Some(st) = &pod.status else {
        return format!("\npod {name}: no status\n");
    };
    let mut out = format!(
        "\npod {name}: phase {}{}{}\n",
        st.phase.as_deref().unwrap_or("?"),
        st.reason
            .as_deref()
            .map(|r| format!(", reason {r}"))
            .unwrap_or_default(),
        st.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default(),
    );
    for c in st
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status == "True")
    {
        if c.type_ == "DisruptionTarget" {
            out.push_str(&format!(
                "  condition DisruptionTarget: {} {}\n",
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            ));
        }
    }
    for c in st
        .init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
    {
        if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
            out.push_str(&format!(
                "  container {}: terminated, exit code {}{}{}\n",
                c.name,
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(", reason {r}"))
                    .unwrap_or_default(),
                t.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default(),
            ));
        }
    }
    out
}

/// Writes the evidence file to `bucket` and notes its key in `rec`; a failure is logged.
pub async fn store(
    s3c: &aws_sdk_s3::Client,
    bucket: &str,
    key: String,
    text: String,
    rec: &mut JobRecord,
) {
    match s3::put_object(s3c, bucket, &key, text.into_bytes()).await {
        Ok(()) => rec.evidence = Some(key),
        Err(e) => tracing::warn!("storing failure evidence: {e}"),
    }
}

/// A port-forwarded S3 client opened on first use (one per caller, kept while it lives).
pub type LazyS3 = Option<(crate::cluster::portforward::PortForward, aws_sdk_s3::Client)>;

/// [`gather`] and [`store`] for one Job that ended failed or lost: `rec` is refined and, when
/// the evidence could be written to the run's bucket, names its key. The S3 client is opened
/// through a port-forward to the robovast pod on first use.
pub async fn keep(
    client: &kube::Client,
    namespace: &str,
    bucket: &str,
    job: &Job,
    rec: &mut JobRecord,
    s3c: &mut LazyS3,
) {
    let Some((key, text)) = gather(client, namespace, job, rec).await else {
        return;
    };
    if s3c.is_none() {
        match s3::forwarded(client, namespace, super::base::ROBOVAST_POD).await {
            Ok(c) => *s3c = Some(c),
            Err(e) => {
                tracing::warn!(
                    "failure evidence of '{}' not stored: {e}",
                    job.metadata.name.as_deref().unwrap_or("?")
                );
                return;
            }
        }
    }
    if let Some((_, c)) = s3c.as_ref() {
        store(c, bucket, key, text, rec).await;
    }
}

/// Records the outcome of `job` in `record` when it finished and none is recorded yet, with its
/// evidence when it failed or was lost ([`keep`]); returns whether the record changed.
pub async fn observe(
    client: &kube::Client,
    namespace: &str,
    bucket: &str,
    job: &Job,
    record: &mut super::runs::RunRecord,
    s3c: &mut LazyS3,
) -> bool {
    let Some(name) = job.metadata.name.as_deref() else {
        return false;
    };
    if record.finished.contains_key(name) {
        return false;
    }
    let Some(mut rec) = super::runs::job_record(job) else {
        return false;
    };
    if rec.outcome != super::runs::JobOutcome::Succeeded {
        keep(client, namespace, bucket, job, &mut rec, s3c).await;
    }
    record.record(name, rec)
}
