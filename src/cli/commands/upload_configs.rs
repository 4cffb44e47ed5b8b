//! `vast execution cluster upload-configs DIR`: uploads `DIR/out_template/` of a prepared run
//! to the run's bucket in the cluster's S3, as `DIR/upload_configs.py` does, for someone who
//! has only `vast`. The namespace and bucket come from the prepared Jobs (`DIR/jobs/*.yaml`),
//! the keys from the Secret `vast-s3-credentials`, and S3 is reached through a kube-rs
//! port-forward to the `robovast` pod. Re-running it skips what is already uploaded, which
//! is also how a transient failure is retried: the whole upload again (objects already there
//! are skipped) with the pre-flight schedule (`cluster_common::preflight_policy`), the only
//! retry layer of its calls.

use crate::cli::output;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::cli::{args::UploadConfigsArgs, ExitStatus, Globals, UsageError};
use crate::cluster::portforward::PortForward;
use crate::cluster::{client, s3};

/// The pod serving the in-cluster S3, and its port.
const ROBOVAST_POD: &str = "robovast";
const S3_PORT: u16 = 9000;
/// How long to wait for a just-created `robovast` pod to reach Running.
const POD_WAIT: Duration = Duration::from_secs(60);

/// A prepared-run directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PreparedDirError {
    #[error("'{}' is not a prepare-run output directory: {what} is missing", dir.display())]
    Missing { dir: PathBuf, what: &'static str },
    #[error("no Job manifests (*.yaml) in '{}'; is this a prepare-run output directory?", .0.display())]
    NoJobs(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a Job manifest: {message}", path.display())]
    BadJob { path: PathBuf, message: String },
    #[error("{}: Jobs of different runs in one directory ({field} '{got}' here, '{want}' in {})", path.display(), first.display())]
    Mixed {
        path: PathBuf,
        first: PathBuf,
        field: &'static str,
        got: String,
        want: String,
    },
}

/// Where a prepared run's configurations go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    pub namespace: String,
    pub bucket: String,
    pub template: PathBuf,
}

/// Reads the namespace and bucket from every `DIR/jobs/*.yaml` (they must agree).
pub fn upload_target(dir: &Path) -> Result<UploadTarget, PreparedDirError> {
    let template = dir.join("out_template");
    if !template.is_dir() {
        return Err(PreparedDirError::Missing {
            dir: dir.to_path_buf(),
            what: "out_template/",
        });
    }
    let jobs_dir = dir.join("jobs");
    if !jobs_dir.is_dir() {
        return Err(PreparedDirError::Missing {
            dir: dir.to_path_buf(),
            what: "jobs/",
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PreparedDirError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&jobs_dir).map_err(io(&jobs_dir))? {
        let path = entry.map_err(io(&jobs_dir))?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut found: Option<(PathBuf, String, String)> = None;
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let (namespace, bucket) =
            job_target(&text).map_err(|message| PreparedDirError::BadJob {
                path: path.clone(),
                message,
            })?;
        match &found {
            None => found = Some((path, namespace, bucket)),
            Some((first, ns, b)) => {
                for (field, got, want) in [("namespace", &namespace, ns), ("S3_BUCKET", &bucket, b)]
                {
                    if got != want {
                        return Err(PreparedDirError::Mixed {
                            path,
                            first: first.clone(),
                            field,
                            got: got.clone(),
                            want: want.clone(),
                        });
                    }
                }
            }
        }
    }
    let (_, namespace, bucket) = found.ok_or(PreparedDirError::NoJobs(jobs_dir))?;
    Ok(UploadTarget {
        namespace,
        bucket,
        template,
    })
}

/// `metadata.namespace` and the main container's `S3_BUCKET` of one Job manifest.
fn job_target(text: &str) -> Result<(String, String), String> {
    let job: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if job["kind"].as_str() != Some("Job") {
        return Err("kind is not Job".into());
    }
    let namespace = job["metadata"]["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("metadata.namespace is missing")?
        .to_string();
    let containers = job["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .ok_or("spec.template.spec.containers is missing")?;
    // The main container is named `robovast`; fall back to any container that has the env.
    let bucket_of = |c: &serde_yaml::Value| {
        c["env"].as_sequence().and_then(|env| {
            env.iter()
                .find(|e| e["name"].as_str() == Some("S3_BUCKET"))
                .and_then(|e| e["value"].as_str())
                .filter(|v| !v.is_empty())
                .map(String::from)
        })
    };
    let bucket = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("robovast"))
        .and_then(bucket_of)
        .or_else(|| containers.iter().find_map(bucket_of))
        .ok_or("no container has an S3_BUCKET env value")?;
    Ok((namespace, bucket))
}

/// Waits (up to [`POD_WAIT`]) for the `robovast` pod to be Running.
async fn wait_for_pod(pods: &Api<Pod>, namespace: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + POD_WAIT;
    let mut told = false;
    loop {
        let pod = super::cluster_common::preflight(|| pods.get_opt(ROBOVAST_POD))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot read pod '{ROBOVAST_POD}' in namespace '{namespace}': {e}")
            })?;
        let Some(pod) = pod else {
            return Err(UsageError(format!(
                "no pod '{ROBOVAST_POD}' in namespace '{namespace}': create it first (robovast-manifest.yaml, see the run's README)"
            ))
            .into());
        };
        let phase = pod
            .status
            .and_then(|s| s.phase)
            .unwrap_or_else(|| "Unknown".into());
        if phase == "Running" {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "pod '{ROBOVAST_POD}' in namespace '{namespace}' is {phase}, not Running, after {} s",
                POD_WAIT.as_secs()
            );
        }
        if !told {
            tracing::info!("Waiting for pod '{ROBOVAST_POD}' ({phase}) to be Running...");
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn run(args: UploadConfigsArgs, _globals: &Globals) -> anyhow::Result<ExitStatus> {
    let target = upload_target(&args.dir).map_err(|e| match e {
        PreparedDirError::Io { .. } => anyhow::Error::new(e),
        other => UsageError(other.to_string()).into(),
    })?;
    let kube = client::client(args.context.as_deref())
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let retry = super::cluster_common::preflight_policy();
    let credentials = retry
        .retry_if(
            || s3::read_credentials(kube.clone(), &target.namespace),
            |e| e.is_transient(),
        )
        .await
        .map_err(|e| -> anyhow::Error {
            if e.is_transient() {
                e.into()
            } else {
                UsageError(e.to_string()).into()
            }
        })?;
    let pods: Api<Pod> = Api::namespaced(kube, &target.namespace);
    wait_for_pod(&pods, &target.namespace).await?;
    let forward = PortForward::start(pods, ROBOVAST_POD, S3_PORT).await?;
    let client = s3::client(&forward.http_endpoint(), &credentials);

    output::status(format!(
        "Uploading config files to S3 bucket '{}'...",
        target.bucket
    ));
    // The one retry layer of this command's S3 calls (the client does not retry): a retry
    // skips the objects already uploaded.
    let summary = retry
        .retry_if(
            || async {
                s3::ensure_bucket(&client, &target.bucket).await?;
                s3::upload_dir(&client, &target.bucket, &target.template).await
            },
            |e| e.is_transient(),
        )
        .await?;
    if summary.skipped > 0 {
        output::result(format!(
            "Upload complete. ({} files, {} already present)",
            summary.files(),
            summary.skipped
        ));
    } else {
        output::result(format!("Upload complete. ({} files)", summary.files()));
    }
    if args.json {
        output::print_json(&serde_json::json!({
            "bucket": target.bucket,
            "files": summary.files(),
            "already_present": summary.skipped,
        }))?;
    }
    drop(forward);
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\n  namespace: sims\nspec:\n  template:\n    spec:\n      containers:\n      - name: robovast\n        env:\n        - {name: S3_ENDPOINT, value: 'http://robovast:9000'}\n        - {name: S3_BUCKET, value: run-1}\n";

    #[test]
    fn namespace_and_bucket_come_from_the_job() {
        assert_eq!(job_target(JOB).unwrap(), ("sims".into(), "run-1".into()));
    }

    #[test]
    fn bad_jobs_are_named() {
        let no_ns = JOB.replace("  namespace: sims\n", "");
        assert!(job_target(&no_ns)
            .unwrap_err()
            .contains("metadata.namespace"));
        let no_bucket = JOB.replace("S3_BUCKET", "OTHER");
        assert!(job_target(&no_bucket).unwrap_err().contains("S3_BUCKET"));
        let not_job = JOB.replace("kind: Job", "kind: Pod");
        assert!(job_target(&not_job).unwrap_err().contains("kind"));
    }

    #[test]
    fn jobs_of_different_runs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("out_template")).unwrap();
        std::fs::create_dir_all(tmp.path().join("jobs")).unwrap();
        std::fs::write(tmp.path().join("jobs/a.yaml"), JOB).unwrap();
        std::fs::write(tmp.path().join("jobs/b.yaml"), JOB).unwrap();
        let t = upload_target(tmp.path()).unwrap();
        assert_eq!((t.namespace.as_str(), t.bucket.as_str()), ("sims", "run-1"));
        std::fs::write(
            tmp.path().join("jobs/c.yaml"),
            JOB.replace("run-1", "run-2"),
        )
        .unwrap();
        let err = upload_target(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("c.yaml") && err.contains("S3_BUCKET 'run-2'"),
            "{err}"
        );
    }
}
