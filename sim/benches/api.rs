//! Job creates per second against the sim on loopback, with 1 and with 32 concurrent kube-rs
//! clients (each its own connection pool). Prints numbers; asserts nothing about time.
//!
//! Run: `cargo bench -p vast-sim --bench api` (env `JOBS` = creates per run, default 4000).

use std::time::Instant;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use serde_json::json;
use vast_sim::config::SimConfig;
use vast_sim::server::Sim;

fn job(name: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"jobgroup": "scenario-runs", "run-id": "bench"}},
        "spec": {
            // suspended: the controllers keep them but start no pods, so this measures the API
            "suspend": true, "backoffLimit": 0, "ttlSecondsAfterFinished": 60,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "robovast", "image": "scenario:latest",
                "env": [{"name": "S3_ENDPOINT", "value": "http://robovast:9000"}, {"name": "S3_PREFIX", "value": "cfg/0"}],
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}}
        }
    }))
    .expect("job json")
}

fn client(url: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.default_namespace = "default".into();
    kube::Client::try_from(config).expect("client")
}

async fn run(controllers: bool, clients: usize, total: usize) -> f64 {
    let sim = Sim::start(SimConfig {
        controllers,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let url = sim.url();
    let per = total / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api: Api<Job> = Api::default_namespaced(client(&url));
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                api.create(&PostParams::default(), &job(&format!("b{c}-{i}")))
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = (per * clients) as f64 / secs;
    println!(
        "job creates: {clients:>2} client(s), controllers {}: {} creates in {secs:.2} s = {rate:.0}/s",
        if controllers { "on " } else { "off" },
        per * clients
    );
    sim.shutdown().await;
    rate
}

fn main() {
    let total: usize = std::env::var("JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for controllers in [false, true] {
            run(controllers, 1, total / 4).await;
            run(controllers, 32, total).await;
        }
    });
}
