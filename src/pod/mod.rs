//! The pod side of vast: the Python scripts that run in the robovast pod's `archiver`
//! container (versioned with vast, embedded here, shipped as the ConfigMap
//! `vast-archiver-scripts` mounted at `/opt/vast/scripts`), and the protocol by which vast
//! starts them detached and polls their status files with short exec calls
//! (`vastpod.py start|status|stop`, see `src/pod/scripts/vastpod.py`).
//!
//! A task is identified by its state file in the pod (`/data/.vast/<name>.json`). A
//! task whose state says running while nobody holds its lock died with its process (pod
//! restart) and is started again by the caller; a dropped exec stream is an error, never a
//! success.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cluster::exec::{exec, ExecError};

/// Container that runs the scripts.
pub const CONTAINER: &str = "archiver";
/// Where the ConfigMap is mounted in the archiver container.
pub const SCRIPTS_DIR: &str = "/opt/vast/scripts";
/// Archives live here (the pod's HTTP server serves this directory at `/`).
pub const ARCHIVE_DIR: &str = "/data/archives";
/// Task state files (outside the directory the pod's HTTP server serves: a Drive upload
/// session URI is a capability).
pub const STATE_DIR: &str = "/data/.vast";
/// Where the share Secret (`vast-share`) is mounted in the archiver container.
pub const SHARE_ENV_DIR: &str = "/var/run/vast/share";
/// The ConfigMap holding the scripts.
pub const CONFIGMAP: &str = "vast-archiver-scripts";
/// The Secret holding the share provider's variables.
pub const SHARE_SECRET: &str = "vast-share";

/// The built-in scripts: (ConfigMap key, content).
pub const BUILTIN_SCRIPTS: &[(&str, &str)] = &[
    ("vastpod.py", include_str!("scripts/vastpod.py")),
    ("archive.py", include_str!("scripts/archive.py")),
    (
        "upload_nextcloud.py",
        include_str!("scripts/upload_nextcloud.py"),
    ),
    ("upload_gdrive.py", include_str!("scripts/upload_gdrive.py")),
    ("s3lite.py", include_str!("scripts/s3lite.py")),
    ("rs256.py", include_str!("scripts/rs256.py")),
];

/// How long one status or start call may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of run `run`'s archive in the pod.
pub fn archive_path(run: &str) -> String {
    format!("{ARCHIVE_DIR}/{run}.tar.gz")
}

/// Path of the state file of task `name` (e.g. `run-x.archive`).
pub fn state_path(name: &str) -> String {
    format!("{STATE_DIR}/{name}.json")
}

/// The scripts ConfigMap's files: the built-ins, `extra` (plugin scripts), and `VERSION`, a
/// hash of everything else, by which vast sees whether the pod mounts this version.
pub fn scripts(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = BUILTIN_SCRIPTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(extra.iter().cloned())
        .collect();
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    let mut h = Sha256::new();
    for (k, v) in &files {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let version = hex::encode(&h.finalize()[..8]);
    files.push(("VERSION".into(), version));
    files
}

/// The version [`scripts`] gives `extra`.
pub fn version(files: &[(String, String)]) -> &str {
    files
        .iter()
        .find(|(k, _)| k == "VERSION")
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The ConfigMap object of [`scripts`].
pub fn configmap(files: &[(String, String)]) -> Value {
    let data: serde_json::Map<String, Value> = files
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP,
            "labels": {"app.kubernetes.io/managed-by": "vast", "app.kubernetes.io/component": "archiver-scripts"},
        },
        "data": data,
    })
}

/// What `vastpod.py status` reports about a task.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TaskStatus {
    /// absent | running | succeeded | failed | corrupt
    pub state: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub alive: bool,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub progress: Option<Value>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

impl TaskStatus {
    /// Running with a live process.
    pub fn is_running(&self) -> bool {
        self.state == "running" && self.alive
    }
    /// Its process is gone without a final state (killed with the pod), or never started.
    pub fn needs_start(&self) -> bool {
        match self.state.as_str() {
            "running" => !self.alive,
            "absent" | "corrupt" => !self.alive,
            _ => false,
        }
    }
    /// A progress counter (`bytes`, `total`, `objects`, ...).
    pub fn progress_u64(&self, key: &str) -> Option<u64> {
        self.progress.as_ref()?.get(key)?.as_u64()
    }
}

/// Errors talking to the scripts.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The script runner answered something vast cannot read (missing scripts, old version).
    #[error("{what}: {message}")]
    Protocol { what: String, message: String },
}

impl PodError {
    pub fn is_transient(&self) -> bool {
        match self {
            PodError::Exec(e) => e.is_transient(),
            // A missing or stale script mount is fixed by waiting for the kubelet's sync.
            PodError::Protocol { .. } => true,
        }
    }
}

/// The scripts of one pod.
#[derive(Clone)]
pub struct PodScripts {
    pods: Api<Pod>,
    pod: String,
}

impl PodScripts {
    pub fn new(pods: Api<Pod>, pod: &str) -> Self {
        PodScripts {
            pods,
            pod: pod.to_string(),
        }
    }

    fn argv(script: &str, args: &[&str]) -> Vec<String> {
        let mut v = vec!["python".to_string(), format!("{SCRIPTS_DIR}/{script}")];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Runs a short command in the archiver container; exit code and output returned.
    pub async fn run(&self, argv: &[String]) -> Result<crate::cluster::exec::ExecOutput, PodError> {
        Ok(exec(&self.pods, &self.pod, CONTAINER, argv, None, EXEC_TIMEOUT).await?)
    }

    /// The version of the scripts the pod mounts (`None`: no scripts mounted).
    pub async fn mounted_version(&self) -> Result<Option<String>, PodError> {
        let out = self
            .run(&["cat".to_string(), format!("{SCRIPTS_DIR}/VERSION")])
            .await?;
        if out.code != 0 {
            return Ok(None);
        }
        Ok(Some(out.stdout_text().trim().to_string()))
    }

    /// The task's status.
    pub async fn status(&self, state: &str) -> Result<TaskStatus, PodError> {
        let out = self
            .run(&Self::argv("vastpod.py", &["status", "--state", state]))
            .await?;
        parse_json_line(&out, "vastpod.py status")
    }

    /// Starts `command` detached as task `state` (no-op when it already runs). The variables in
    /// `env_dir` (a mounted Secret) reach the command's environment without appearing in argv.
    pub async fn start(
        &self,
        state: &str,
        token: &str,
        env_dir: Option<&str>,
        command: &[String],
    ) -> Result<bool, PodError> {
        let mut args: Vec<&str> = vec!["start", "--state", state, "--token", token];
        if let Some(d) = env_dir {
            args.extend(["--env-dir", d]);
        }
        args.push("--");
        let mut argv = Self::argv("vastpod.py", &args);
        argv.extend(command.iter().cloned());
        let out = self.run(&argv).await?;
        let v: Value = parse_json_line(&out, "vastpod.py start")?;
        Ok(v.get("started").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Stops the task if it runs.
    pub async fn stop(&self, state: &str) -> Result<(), PodError> {
        let out = self
            .run(&Self::argv("vastpod.py", &["stop", "--state", state]))
            .await?;
        let _: Value = parse_json_line(&out, "vastpod.py stop")?;
        Ok(())
    }

    /// Removes files (`rm -f`), e.g. an archive and its companions.
    pub async fn remove(&self, paths: &[String]) -> Result<(), PodError> {
        let mut argv = vec!["rm".to_string(), "-f".to_string()];
        argv.extend(paths.iter().cloned());
        let out = self.run(&argv).await?;
        if out.code != 0 {
            return Err(PodError::Protocol {
                what: format!("removing {}", paths.join(" ")),
                message: out.stderr_text().trim().to_string(),
            });
        }
        Ok(())
    }

    /// The archives in [`ARCHIVE_DIR`] (file names).
    pub async fn list_archives(&self) -> Result<Vec<String>, PodError> {
        let out = self
            .run(&[
                "sh".to_string(),
                "-c".to_string(),
                format!("ls {ARCHIVE_DIR} 2>/dev/null || true"),
            ])
            .await?;
        let mut names: Vec<String> = out
            .stdout_text()
            .lines()
            .map(str::trim)
            .filter(|n| n.ends_with(".tar.gz"))
            .map(String::from)
            .collect();
        names.sort();
        Ok(names)
    }
}

fn parse_json_line<T: serde::de::DeserializeOwned>(
    out: &crate::cluster::exec::ExecOutput,
    what: &str,
) -> Result<T, PodError> {
    let text = out.stdout_text();
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
    match line.map(serde_json::from_str::<T>) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(PodError::Protocol {
            what: what.to_string(),
            message: format!("unreadable answer ({e})"),
        }),
        None => Err(PodError::Protocol {
            what: what.to_string(),
            message: format!(
                "no answer (exit code {}): {}",
                out.code,
                last_line(&out.stderr_text())
            ),
        }),
    }
}

/// The last non-empty line of a script's output, trimmed.
pub fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_version_changes_with_any_file() {
        let a = scripts(&[]);
        let b = scripts(&[("share-x.py".into(), "print(1)".into())]);
        assert_ne!(version(&a), version(&b));
        assert_eq!(version(&a), version(&scripts(&[])));
        assert_eq!(version(&a).len(), 16);
        let cm = configmap(&a);
        assert_eq!(cm["metadata"]["name"], CONFIGMAP);
        assert!(cm["data"]["vastpod.py"].as_str().is_some());
        assert_eq!(cm["data"]["VERSION"], version(&a));
    }

    #[test]
    fn a_running_task_without_its_process_must_be_started_again() {
        let dead = TaskStatus {
            state: "running".into(),
            alive: false,
            ..Default::default()
        };
        assert!(dead.needs_start() && !dead.is_running());
        let live = TaskStatus {
            state: "running".into(),
            alive: true,
            ..Default::default()
        };
        assert!(live.is_running() && !live.needs_start());
        let done = TaskStatus {
            state: "succeeded".into(),
            ..Default::default()
        };
        assert!(!done.needs_start());
        let absent: TaskStatus =
            serde_json::from_str(r#"{"state":"absent","alive":false}"#).unwrap();
        assert!(absent.needs_start());
    }
}
