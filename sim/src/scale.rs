//! `vast-sim scale --jobs N`: the sim's own memory and create-throughput measurement. Starts a
//! sim in this process with its controllers on and pods that run for an hour (so every Job,
//! its Workload and its pod stay), installs a Kueue ClusterQueue with room for every Job,
//! creates N Jobs shaped like the ones vast renders (queue label, init container, env,
//! volumes) through the HTTP API with a few concurrent connections, waits until every Job's
//! Workload is admitted and its pod created (and then, for at most `--run-wait-s`, until the
//! pods run), and prints the sim's resident memory per Job and the creates per second.
//! Prints numbers; asserts nothing about them (see docs/benchmarks.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::config::SimConfig;
use crate::server::Sim;
use crate::store::{keys, Store};

/// One measurement.
#[derive(Debug, Clone)]
pub struct ScaleResult {
    pub jobs: usize,
    pub create_secs: f64,
    /// Seconds from the first create until every Job's pod existed.
    pub settle_secs: f64,
    /// Resident memory of this process before the creates and after settling (MiB).
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    /// Peak resident memory of this process (MiB).
    pub rss_peak_mib: f64,
    /// Pods Running when the memory was measured (the others are bound and Pending).
    pub running: usize,
}

impl ScaleResult {
    pub fn creates_per_s(&self) -> f64 {
        self.jobs as f64 / self.create_secs.max(1e-9)
    }
    /// Memory the Jobs added, per Job (KiB): (RSS after − RSS before) / N.
    pub fn kib_per_job(&self) -> f64 {
        (self.rss_after_mib - self.rss_before_mib) * 1024.0 / self.jobs.max(1) as f64
    }
    /// The machine-readable line the benchmark prints last.
    pub fn line(&self) -> String {
        format!(
            "SCALE jobs={} running={} creates_per_s={:.0} create_s={:.2} settle_s={:.2} sim_rss_mib={:.0} sim_peak_rss_mib={:.0} kib_per_job={:.1}",
            self.jobs,
            self.running,
            self.creates_per_s(),
            self.create_secs,
            self.settle_secs,
            self.rss_after_mib,
            self.rss_peak_mib,
            self.kib_per_job()
        )
    }
}

/// A field of `/proc/self/status` in MiB (`VmRSS`, `VmHWM`); 0 where there is none.
pub fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
        })
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// A Job as vast renders one (labels, queue, init container fetching the configuration,
/// scenario container with env and resources, volumes), `i` making it unique.
pub fn job(i: usize) -> Value {
    let cfg = i % 100;
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("scale-{i:06}"), "labels": {
            "jobgroup": "scenario-runs", "run-id": "scale-bench", "config": format!("cfg-{cfg}"),
            "run-number": (i / 100).to_string(), "kueue.x-k8s.io/queue-name": "robovast"}},
        "spec": {
            "backoffLimit": 0, "ttlSecondsAfterFinished": 3600,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {
                "metadata": {"labels": {"jobgroup": "scenario-runs", "run-id": "scale-bench"}},
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [{"name": "fetch-config", "image": "minio/mc:latest",
                        "command": ["sh", "-c", "mc cp --recursive s3/robovast/scale-bench/cfg-$CFG/ /config/"],
                        "env": [{"name": "CFG", "value": format!("{cfg}")}],
                        "volumeMounts": [{"name": "config", "mountPath": "/config"}]}],
                    "containers": [{
                        "name": "robovast", "image": "ghcr.io/cps-test-lab/robovast:latest",
                        "env": [
                            {"name": "S3_ENDPOINT", "value": "http://robovast:9000"},
                            // no S3_BUCKET: not a scenario pod, so the data plane starts no
                            // S3 checks (the Job's memory in the store is what is measured)
                            {"name": "S3_REGION", "value": "us-east-1"},
                            {"name": "S3_PREFIX", "value": format!("scale-bench/cfg-{cfg}/run-{}", i / 100)},
                            {"name": "RUN_ID", "value": "scale-bench"},
                            {"name": "SCENARIO", "value": "scenario.osc"}
                        ],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "10m", "memory": "16Mi"}},
                        "volumeMounts": [{"name": "config", "mountPath": "/config"}, {"name": "out", "mountPath": "/out"}]}],
                    "volumes": [{"name": "config", "emptyDir": {}}, {"name": "out", "emptyDir": {}}]
                }
            }
        }
    })
}

fn install_queues(store: &Store, jobs: usize) -> Result<(), crate::store::Error> {
    let cpu = format!("{}m", jobs * 10 + 1000);
    let mem = format!("{}Mi", jobs * 16 + 1024);
    let objs = [
        (
            keys::RESOURCEFLAVORS,
            json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "default-flavor"}}),
        ),
        (
            keys::CLUSTERQUEUES,
            json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "robovast-cluster-queue"},
            "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
                "name": "default-flavor", "resources": [{"name": "cpu", "nominalQuota": cpu}, {"name": "memory", "nominalQuota": mem}]}]}]}}),
        ),
        (
            keys::LOCALQUEUES,
            json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "robovast", "namespace": "default"},
            "spec": {"clusterQueue": "robovast-cluster-queue"}}),
        ),
    ];
    for (key, obj) in objs {
        store.create(&Arc::from(key), obj)?;
    }
    Ok(())
}

fn running_pods(store: &Store) -> usize {
    let (_, pods) = store.list(keys::PODS, Some("default"));
    pods.iter()
        .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
        .count()
}

/// Runs the measurement: `jobs` creates over `connections` concurrent connections; measures
/// once every pod exists and either all run or `run_wait` has passed.
pub async fn run(
    jobs: usize,
    connections: usize,
    run_wait: Duration,
) -> anyhow::Result<ScaleResult> {
    let mut config = SimConfig::default();
    // room for every pod: the measurement is about memory, not scheduling
    config.nodes.count = 4;
    config.nodes.cpu = format!("{}", jobs / 200 + 100);
    config.nodes.memory = format!("{}Mi", jobs * 8 + 65536);
    config.nodes.pods = (jobs / 2 + 1000) as u32;
    config.pods.job_duration_ms = 3_600_000;
    let sim = Sim::start(config).await?;
    install_queues(sim.store(), jobs)?;
    let url = sim.url();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before_mib = proc_status_mib("VmRSS");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (client, next, url) = (client.clone(), next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return Ok::<(), anyhow::Error>(());
                }
                let body = Bytes::from(serde_json::to_vec(&job(i))?);
                let req =
                    hyper::Request::post(format!("{url}/apis/batch/v1/namespaces/default/jobs"))
                        .header("content-type", "application/json")
                        .body(Full::new(body))?;
                let resp = client.request(req).await?;
                let status = resp.status();
                let _ = resp.into_body().collect().await?;
                anyhow::ensure!(status.is_success(), "create {i}: HTTP {status}");
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let create_secs = start.elapsed().as_secs_f64();
    // every Job's Workload admitted and its pod created (pods are counted without parsing
    // them), then at most `run_wait` more for them to run
    let deadline = Instant::now() + Duration::from_secs(600 + jobs as u64 / 10);
    while sim.store().count(keys::PODS, "default") < jobs {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {jobs} pods created after the deadline",
            sim.store().count(keys::PODS, "default")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle_secs = start.elapsed().as_secs_f64();
    let wait_until = Instant::now() + run_wait;
    let mut running = running_pods(sim.store());
    while running < jobs && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        running = running_pods(sim.store());
    }
    let result = ScaleResult {
        jobs,
        create_secs,
        settle_secs,
        rss_before_mib,
        rss_after_mib: proc_status_mib("VmRSS"),
        rss_peak_mib: proc_status_mib("VmHWM"),
        running,
    };
    sim.shutdown().await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_settles_and_reports() {
        let r = run(20, 2, Duration::from_secs(60))
            .await
            .expect("scale run");
        assert_eq!(r.jobs, 20);
        assert_eq!(r.running, 20);
        assert!(r
            .line()
            .starts_with("SCALE jobs=20 running=20 creates_per_s="));
        assert!(r.rss_after_mib > 0.0);
    }
}
