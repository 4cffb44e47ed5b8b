//! Shared support of the cluster-operation tests: an in-process vast-sim with a kubeconfig, a
//! copy of the growth_sim example project initialised in a temporary directory, the real
//! binary run against both, in-process execution of the workflows (with the engine's crash
//! injection), and a comparable [`World`] summary of what a cluster holds.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ListParams};
use serde_json::{json, Value};
use vast::engine::{Engine, EngineOptions, Outcome, RunId};
use vast::ops::base::ClusterEnv;
use vast::store::StateDir;
use vast_sim::config::SimConfig;
use vast_sim::server::{Sim, SimHandle};

pub const VAST: &str = env!("CARGO_BIN_EXE_vast");
pub const NS: &str = "default";
pub const CTX: &str = "vast-sim";

pub struct Cluster {
    pub sim: SimHandle,
    pub tmp: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub project: PathBuf,
    pub state: PathBuf,
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run id in `run`'s detached output (`✓ Jobs created successfully (Run ID: <id>)`).
pub fn run_id_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("✓ Jobs created successfully (Run ID: "))
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no run id in {stdout}"))
        .to_string()
}

/// The id in the `run <id> started (...)` line of a command's stderr, for ids starting with
/// `prefix` (the operation).
pub fn started_id(stderr: &str, prefix: &str) -> String {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")?
                .split(' ')
                .next()
                .filter(|s| s.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no '{prefix}' run started in: {stderr}"))
        .to_string()
}

/// Lowercase hex SHA-256.
pub fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Waits until the file at `path` holds at least `len` bytes (`what` names it on timeout).
pub async fn wait_for_len(path: &Path, len: u64, secs: u64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < len {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A sim with `config`, and the growth_sim example initialised as a project.
pub async fn start(config: SimConfig) -> Cluster {
    let sim = Sim::start(config).await.expect("sim starts");
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let project = tmp.path().join("project");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim"),
        &project,
    );
    vast::project::files::Project::init(
        &project,
        &project.join("growth_sim.vast"),
        Path::new("results"),
        "INFO",
        true,
    )
    .expect("project init");
    let state = project.join(".vast-state");
    Cluster {
        sim,
        tmp,
        kubeconfig,
        project,
        state,
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

impl Cluster {
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.sim.url().parse().unwrap());
        config.default_namespace = NS.into();
        kube::Client::try_from(config).unwrap()
    }

    /// The real binary, in the project directory, with this cluster's kubeconfig.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(VAST);
        c.args(args)
            .current_dir(&self.project)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("VAST_STATE_DIR")
            .env_remove("FAILPOINTS")
            .env_remove("VAST_LOG")
            .env("VAST_HELM", "/nonexistent/helm");
        c
    }

    /// `vast execution cluster setup <config>` with the binary; it must succeed.
    pub async fn setup_cli(&self, config: &str) {
        let out = self.vast(&["execution", "cluster", "setup", config]).await;
        assert!(out.status.success(), "setup: {}", text(&out.stderr));
    }

    /// The setup workflow in-process; it must succeed.
    pub async fn setup_in_process(&self, config: &str) {
        let (_, o) = self
            .execute(
                "setup",
                &self.setup_params(config),
                EngineOptions::default(),
            )
            .await;
        assert_eq!(o, Outcome::Succeeded);
    }

    /// Runs the binary off the async runtime.
    pub async fn vast(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || c.output().expect("spawn vast"))
            .await
            .unwrap()
    }

    pub fn env(&self) -> ClusterEnv {
        ClusterEnv {
            client: self.client(),
            context: None,
            namespace: NS.into(),
        }
    }

    /// The resources `vast resume` builds for a cluster operation of this cluster.
    pub fn resources(&self) -> vast::engine::Resources {
        let mut r = vast::engine::Resources::default();
        r.insert(self.env());
        r.insert(vast::ops::run::ProjectCache::default());
        r
    }

    pub fn setup_params(&self, config: &str) -> Value {
        json!({
            "context": null, "namespace": NS, "cluster_config": config, "options": {},
            "force": false, "project_dir": self.project.display().to_string(),
            "setup_key": CTX, "pod_timeout_s": 60,
        })
    }

    pub fn cleanup_params(&self, config: &str) -> Value {
        json!({
            "context": null, "namespace": NS, "cluster_config": config, "options": {},
            "project_dir": self.project.display().to_string(), "setup_key": CTX,
        })
    }

    pub fn run_params(&self, runs: u32, follow: bool) -> Value {
        let vast_file = self.project.join("growth_sim.vast");
        let text = std::fs::read_to_string(&vast_file).unwrap();
        json!({
            "context": null, "namespace": NS,
            "state_dir": self.state.display().to_string(),
            "vast_file": vast_file.display().to_string(),
            "vast_sha256": vast::ops::run::vast_sha256(&text),
            "config": null, "runs": runs, "log_tree": false, "follow": follow, "cleanup": false,
            "cluster_config": "rke2", "created_at": "2026-12-01T00:00:00Z", "poll_ms": 100,
        })
    }

    /// Creates a run of `operation` and executes it in-process with `options`.
    pub async fn execute(
        &self,
        operation: &str,
        params: &Value,
        options: EngineOptions,
    ) -> (String, Outcome) {
        self.execute_as(&RunId::generate(operation), operation, params, options)
            .await
    }

    /// [`Cluster::execute`] under a given run id.
    pub async fn execute_as(
        &self,
        id: &RunId,
        operation: &str,
        params: &Value,
        options: EngineOptions,
    ) -> (String, Outcome) {
        self.execute_with(id, operation, params, options, self.resources())
            .await
    }

    /// [`Cluster::execute_as`] with the given resources.
    pub async fn execute_with(
        &self,
        id: &RunId,
        operation: &str,
        params: &Value,
        options: EngineOptions,
        resources: vast::engine::Resources,
    ) -> (String, Outcome) {
        let def = vast::ops::definition(operation).unwrap().unwrap();
        let dir = StateDir::new(self.state.clone());
        let mut engine = Engine::new(vast::ops::registry(), resources);
        engine.options = options;
        let id = id.clone();
        let store = engine.create_as(&dir, &id, &def, params).unwrap();
        let outcome = engine
            .execute(store, tokio_util::sync::CancellationToken::new())
            .await;
        (
            id.as_str().to_string(),
            outcome.unwrap_or_else(|e| Outcome::Failed(e.to_string())),
        )
    }

    /// Resumes run `id` in-process with `resources`, retrying for up to 5 s while sled still
    /// holds the lock of the run this process just closed.
    pub async fn resume_with(&self, id: &str, resources: vast::engine::Resources) -> Outcome {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let dir = StateDir::new(self.state.clone());
        let store = loop {
            match dir.open_run(id) {
                Ok(store) => break store,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("open {id}: {e}"),
            }
        };
        Engine::new(vast::ops::registry(), resources)
            .execute(store, tokio_util::sync::CancellationToken::new())
            .await
            .unwrap_or_else(|e| Outcome::Failed(e.to_string()))
    }

    /// Puts every object of `content` into `bucket` (created if missing), direct.
    pub async fn restore_bucket(&self, bucket: &str, content: &BTreeMap<String, Vec<u8>>) {
        let s3 = self.direct_s3().await;
        vast::cluster::s3::ensure_bucket(&s3, bucket).await.unwrap();
        for (k, v) in content {
            s3.put_object()
                .bucket(bucket)
                .key(k)
                .body(v.clone().into())
                .send()
                .await
                .unwrap();
        }
    }

    /// Resumes run `id` in-process (fresh resources, as `vast resume` builds them).
    pub async fn resume(&self, id: &str, options: EngineOptions) -> Outcome {
        let dir = StateDir::new(self.state.clone());
        let mut engine = Engine::new(vast::ops::registry(), self.resources());
        engine.options = options;
        let store = dir.open_run(id).unwrap();
        engine
            .execute(store, tokio_util::sync::CancellationToken::new())
            .await
            .unwrap_or_else(|e| Outcome::Failed(e.to_string()))
    }

    /// An S3 client of the robovast pod's MinIO, direct (no port-forward).
    pub async fn direct_s3(&self) -> aws_sdk_s3::Client {
        let addr = self
            .sim
            .dataplane()
            .endpoint(NS, "robovast", 9000)
            .expect("the robovast pod serves S3");
        let creds = vast::cluster::s3::read_credentials(self.client(), NS)
            .await
            .unwrap();
        vast::cluster::s3::client(&format!("http://{addr}"), &creds)
    }

    /// Setup with `config` and one finished run (`run --follow -r 1`) with the binary; the
    /// run id, which is also its bucket.
    pub async fn finished_run(&self, config: &str) -> String {
        self.setup_cli(config).await;
        let out = self
            .vast(&["execution", "cluster", "run", "--follow", "-r", "1"])
            .await;
        assert!(out.status.success(), "run: {}", text(&out.stderr));
        started_id(&text(&out.stderr), "run-")
    }

    /// The robovast pod's `/data` on the sim's disk: the emptyDir `minio-storage` (rke2,
    /// minikube) or the PVC of the generic ephemeral volume (gcp).
    pub fn pod_data(&self) -> PathBuf {
        let pvc = self
            .sim
            .data_dir()
            .join("pvcs")
            .join(NS)
            .join("robovast-minio-storage");
        if pvc.exists() {
            return pvc;
        }
        self.sim
            .data_dir()
            .join("pods")
            .join(NS)
            .join("robovast")
            .join("volumes")
            .join("minio-storage")
    }

    /// Every key and its bytes in `bucket` (direct S3 endpoint of the robovast pod).
    pub async fn bucket(&self, bucket: &str) -> BTreeMap<String, Vec<u8>> {
        if self
            .sim
            .dataplane()
            .endpoint(NS, "robovast", 9000)
            .is_none()
        {
            return BTreeMap::new();
        }
        let s3 = self.direct_s3().await;
        let mut out = BTreeMap::new();
        let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            let Ok(page) = page else { break };
            for o in page.contents() {
                let key = o.key().unwrap().to_string();
                let body = s3
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                let bytes = body.body.collect().await.unwrap().into_bytes().to_vec();
                out.insert(key, bytes);
            }
        }
        out
    }

    /// What the cluster holds, in a form two runs can be compared by.
    pub async fn world(&self) -> World {
        let c = self.client();
        let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
        let robovast_pod = pods
            .get_opt("robovast")
            .await
            .unwrap()
            .map(|p| p.status.and_then(|s| s.phase).unwrap_or_default());
        let services: Api<Service> = Api::namespaced(c.clone(), NS);
        let service = services.get_opt("robovast").await.unwrap().is_some();
        let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
        let secret = secrets
            .get_opt("vast-s3-credentials")
            .await
            .unwrap()
            .is_some();
        let cq = vast::cluster::kueue::cluster_queues(&c)
            .get_opt("robovast-cluster-queue")
            .await
            .unwrap();
        let stop_policy = cq.as_ref().and_then(|q| {
            q.data
                .pointer("/spec/stopPolicy")
                .and_then(Value::as_str)
                .map(String::from)
        });
        let local_queue = vast::cluster::kueue::local_queues(&c, NS)
            .get_opt("robovast")
            .await
            .unwrap()
            .is_some();
        let jobs: Api<Job> = Api::namespaced(c.clone(), NS);
        let mut by_run: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for j in jobs
            .list(&ListParams::default().labels("jobgroup=scenario-runs"))
            .await
            .unwrap()
            .items
        {
            let run = j.metadata.labels.as_ref().unwrap()["run-id"].clone();
            by_run
                .entry(run)
                .or_default()
                .insert(j.metadata.name.unwrap());
        }
        World {
            robovast_pod,
            service,
            secret,
            cluster_queue: cq.is_some(),
            stop_policy: stop_policy.filter(|p| p != "None"),
            local_queue,
            jobs: by_run,
        }
    }

    /// POSTs to one of the sim's admin endpoints (`/sim/compact`, `/sim/pods/.../restart`)
    /// with a bare HTTP/1.1 request; returns the status line.
    pub async fn sim_post(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.sim.addr())
            .await
            .unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        text(&out).lines().next().unwrap_or_default().to_string()
    }

    /// Waits until every Job of the run finished (or `secs` passed).
    pub async fn wait_jobs_done(&self, run: &str, secs: u64) {
        let jobs: Api<Job> = Api::namespaced(self.client(), NS);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let list = jobs
                .list(&ListParams::default().labels(&format!("run-id={run}")))
                .await
                .unwrap();
            if list.items.iter().all(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.completion_time.as_ref())
                    .is_some()
                    || j.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0
            }) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobs of {run} not done"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// A cluster's state as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub robovast_pod: Option<String>,
    pub service: bool,
    pub secret: bool,
    pub cluster_queue: bool,
    pub stop_policy: Option<String>,
    pub local_queue: bool,
    /// Job names by `run-id`.
    pub jobs: BTreeMap<String, BTreeSet<String>>,
}
