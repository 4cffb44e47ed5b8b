//! `vast doctor` against the simulated cluster, healthy (exit 0, every part ok or a warning)
//! and with each part broken in turn (an unknown context lists the existing ones, no saved
//! setup is a warning naming the command, the robovast pod gone fails with the fix, an
//! unreachable API server fails and skips the rest); and the errors that point a user to the
//! fix: an unknown context anywhere, `monitor --once` of an unreadable context, `download`
//! after `cleanup`.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;
use vast_sim::config::SimConfig;

use super::cluster_support::{start, text, NS};

fn status_of(v: &Value, part: &str) -> String {
    v.as_array()
        .expect("array")
        .iter()
        .find(|c| c["part"] == part)
        .unwrap_or_else(|| panic!("no {part} in {v}"))["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_each_part_healthy_and_broken() {
    let c = start(SimConfig::default()).await;

    // Before setup: the setup is missing (a warning, with the command to run), the pod and S3
    // are skipped; nothing fails.
    let out = c.vast(&["doctor", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(0), "{v}\n{}", text(&out.stderr));
    assert_eq!(status_of(&v, "setup"), "warn");
    assert_eq!(status_of(&v, "robovast pod"), "skip");
    assert_eq!(status_of(&v, "api server"), "ok");

    // Healthy.
    c.setup_cli("rke2").await;
    let out = c.vast(&["doctor"]).await;
    let lines = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{lines}\n{}", text(&out.stderr));
    for part in [
        "kubeconfig",
        "context",
        "api server",
        "kueue",
        "setup",
        "robovast pod",
        "s3",
        "state dir",
    ] {
        assert!(
            lines
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(part)),
            "{part} not ok:\n{lines}"
        );
    }
    assert!(lines.contains("warn  helm"), "{lines}");

    // An unknown context: fail, listing the contexts that exist.
    let out = c.vast(&["doctor", "-x", "nope"]).await;
    let lines = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{lines}");
    assert!(
        lines.contains("context 'nope' is not in the kubeconfig") && lines.contains("use one of: "),
        "{lines}"
    );
    assert!(lines.contains("skip  api server"), "{lines}");

    // The robovast pod gone: fail with the fix; S3 skipped.
    let pods: Api<Pod> = Api::namespaced(c.client(), NS);
    pods.delete("robovast", &Default::default())
        .await
        .expect("delete pod");
    let out = c.vast(&["doctor", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(status_of(&v, "robovast pod"), "fail");
    assert_eq!(status_of(&v, "s3"), "skip");

    // The API server unreachable: fail, naming the context; the cluster parts skipped.
    let dead = c.tmp.path().join("dead-kubeconfig");
    let text_cfg = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    let url = c.sim.url();
    std::fs::write(
        &dead,
        text_cfg.replace(url.trim_end_matches('/'), "http://127.0.0.1:9"),
    )
    .expect("write");
    let mut cmd = c.command(&["doctor", "--json"]);
    cmd.env("KUBECONFIG", &dead);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("spawn"))
        .await
        .expect("join");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(status_of(&v, "api server"), "fail");
    assert_eq!(status_of(&v, "kueue"), "skip");
}

/// An unknown context is named with the contexts that exist, and no run is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_context_lists_the_existing_ones() {
    let c = start(SimConfig::default()).await;
    let kubeconfig = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    let out = c
        .vast(&["execution", "cluster", "setup", "rke2", "-x", "nope"])
        .await;
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("context 'nope' is not in the kubeconfig; its contexts: "),
        "{err}"
    );
    let listed = err
        .split("its contexts: ")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        listed.split(", ").all(|n| kubeconfig.contains(n)) && !listed.is_empty(),
        "{err}"
    );
    assert!(
        !c.state.join("runs").exists(),
        "a configuration problem creates no run"
    );

    // monitor --once of that context: not a lone "(unreachable)" with exit 0.
    let out = c
        .vast(&["execution", "cluster", "monitor", "--once", "-x", "nope"])
        .await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("context 'nope' is unreachable: context 'nope' is not in the kubeconfig"),
        "{err}"
    );
}

/// `download` after `cleanup` (no robovast pod): upstream's message, then a hint naming the
/// next command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_without_the_robovast_pod_hints_at_setup() {
    let c = start(SimConfig::default()).await;
    c.setup_cli("rke2").await;
    let out = c.vast(&["execution", "cluster", "cleanup"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.vast(&["execution", "cluster", "download"]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Required pod 'robovast' does not exist!")
            && err.contains("run `vast execution cluster setup CONFIG` first"),
        "{err}"
    );
}
