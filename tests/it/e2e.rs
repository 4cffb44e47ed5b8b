//! `scripts/e2e.sh`, the end-to-end check a user runs against a real cluster (kind, rke2,
//! GKE), run against the simulated cluster exactly as a user would: a healthy cluster passes
//! every check; a cluster whose scenarios fail stops the script at the check that sees it,
//! with a non-zero exit, and the script cleans up what it set up.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};
use vast_sim::config::SimConfig;
use vast_sim::faults::FaultConfig;

use crate::cluster_support::{start, text, Cluster, CTX, VAST};

fn sim_config(faults: Value) -> SimConfig {
    let mut config = SimConfig::default();
    config.pods.job_duration_ms = 100;
    config.faults = serde_json::from_value::<FaultConfig>(faults).expect("fault config");
    config
}

async fn e2e(c: &Cluster, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/e2e.sh");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script)
        .args(args)
        .current_dir(c.tmp.path())
        .env("KUBECONFIG", &c.kubeconfig)
        .env("VAST", VAST)
        .env("TMPDIR", c.tmp.path())
        .env("VAST_HELM", "/nonexistent/helm")
        .env_remove("VAST_STATE_DIR")
        .env_remove("FAILPOINTS")
        .env_remove("VAST_LOG");
    tokio::time::timeout(std::time::Duration::from_secs(240), cmd.output())
        .await
        .expect("e2e.sh finishes within 4 minutes")
        .expect("bash runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_script_passes_on_a_healthy_cluster() {
    let c = start(sim_config(json!({}))).await;
    let out = e2e(&c, &["--context", CTX, "--runs", "2"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for check in [
        "ok    setup rke2",
        "(5 configurations × 2 runs = 10 Jobs)",
        "ok    wait: every run of",
        "10/10 finished, 10 ok",
        "ok    download: 5 configurations × 2 runs",
        "ok    run-cleanup: the detached run",
        "ok    cleanup: robovast pod and saved setup removed",
        "PASS  9 checks on context 'vast-sim'",
    ] {
        assert!(
            stdout.contains(check),
            "missing {check:?} in\n{stdout}\n{stderr}"
        );
    }
    // Nothing left behind: the robovast pod, its Secret, the queues and every Job gone.
    let world = c.world().await;
    assert!(world.robovast_pod.is_none() && !world.secret, "{world:?}");
    assert!(!world.cluster_queue && !world.local_queue, "{world:?}");
    assert!(world.jobs.is_empty(), "{world:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_script_fails_where_the_cluster_fails_and_cleans_up() {
    let c = start(sim_config(json!({"seed": 1, "pods": [
        {"match": "test-fixed-values", "outcome": "fail", "exit_code": 3}
    ]})))
    .await;
    let out = e2e(&c, &["--context", CTX, "--runs", "1"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("PASS"), "{stdout}");
    assert!(
        stderr.contains("FAIL  e2e stopped in 'wait'"),
        "the failed scenario must stop the script at wait:\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("best-effort cleanup"), "{stderr}");
    let world = c.world().await;
    assert!(world.robovast_pod.is_none() && !world.secret, "{world:?}");
}

#[tokio::test]
async fn e2e_script_refuses_to_run_without_a_context() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/e2e.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("VAST", VAST)
        .output()
        .expect("bash runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--context CTX is required"));
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args(["--context", CTX, "--runs", "zero"])
        .env("VAST", VAST)
        .output()
        .expect("bash runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--runs must be a positive number, got 'zero'"));
}
