//! Short exec calls into a pod's container (kube-rs websocket exec): run a command with an
//! optional stdin, collect stdout and stderr, and return its exit code from the status frame.
//! A stream that ends without a status frame is an error, never a success.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a finished command printed and returned.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The API refused the exec (pod missing, container missing, 403, ...).
    #[error("exec in pod '{pod}' failed: {source}")]
    Api {
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// The stream ended or broke before the command's status arrived: its outcome is unknown.
    #[error("exec in pod '{pod}': the stream ended without the command's exit status ({why})")]
    NoStatus { pod: String, why: String },
    #[error("exec in pod '{pod}' timed out after {secs} s")]
    Timeout { pod: String, secs: u64 },
}

impl ExecError {
    /// Worth retrying: a dropped stream, a timeout, or a transient API error.
    pub fn is_transient(&self) -> bool {
        match self {
            ExecError::Api { source, .. } => matches!(
                super::error::classify(source),
                super::error::Class::Transient { .. }
            ),
            ExecError::NoStatus { .. } | ExecError::Timeout { .. } => true,
        }
    }
}

/// Runs `argv` in `container` of `pod`, feeding `stdin` (if any) and waiting at most
/// `timeout` for the command to finish.
pub async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    argv: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<ExecOutput, ExecError> {
    match tokio::time::timeout(timeout, exec_inner(pods, pod, container, argv, stdin)).await {
        Ok(r) => r,
        Err(_) => Err(ExecError::Timeout {
            pod: pod.to_string(),
            secs: timeout.as_secs(),
        }),
    }
}

async fn exec_inner(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    argv: &[String],
    stdin: Option<&[u8]>,
) -> Result<ExecOutput, ExecError> {
    let params = AttachParams::default()
        .container(container)
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true);
    let mut attached = pods
        .exec(pod, argv.to_vec(), &params)
        .await
        .map_err(|source| ExecError::Api {
            pod: pod.to_string(),
            source,
        })?;
    let no_status = |why: String| ExecError::NoStatus {
        pod: pod.to_string(),
        why,
    };
    let status = attached
        .take_status()
        .ok_or_else(|| no_status("no status channel".into()))?;
    let mut out = attached.stdout();
    let mut err = attached.stderr();
    let feed = async {
        if let (Some(data), Some(mut w)) = (stdin, attached.stdin()) {
            // A command that exits without reading all of its stdin is not an error here.
            let _ = w.write_all(data).await;
            let _ = w.shutdown().await;
        }
    };
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(r) = out.as_mut() {
            let _ = r.read_to_end(&mut buf).await;
        }
        buf
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(r) = err.as_mut() {
            let _ = r.read_to_end(&mut buf).await;
        }
        buf
    };
    let ((), stdout, stderr, status) = tokio::join!(feed, read_out, read_err, status);
    let status = status.ok_or_else(|| no_status("status channel closed".into()))?;
    let code = exit_code(&status).map_err(no_status)?;
    Ok(ExecOutput {
        code,
        stdout,
        stderr,
    })
}

/// The exit code a `Status` frame reports: 0 for Success, the `ExitCode` cause otherwise.
pub fn exit_code(status: &Status) -> Result<i32, String> {
    match status.status.as_deref() {
        Some("Success") => Ok(0),
        Some("Failure") => {
            let cause = status
                .details
                .as_ref()
                .and_then(|d| d.causes.as_ref())
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.reason.as_deref() == Some("ExitCode"))
                        .and_then(|c| c.message.as_deref())
                        .and_then(|m| m.trim().parse::<i32>().ok())
                });
            match cause {
                Some(code) => Ok(code),
                None => Err(format!(
                    "the command could not run: {}",
                    status.message.as_deref().unwrap_or("unknown failure")
                )),
            }
        }
        other => Err(format!("unexpected exec status {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    #[test]
    fn exit_codes_come_from_the_status_frame() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(&ok), Ok(0));
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(&failed), Ok(3));
        let internal = Status {
            status: Some("Failure".into()),
            message: Some("executable not found".into()),
            ..Default::default()
        };
        assert!(exit_code(&internal)
            .unwrap_err()
            .contains("executable not found"));
        assert!(exit_code(&Status::default()).is_err());
    }
}
