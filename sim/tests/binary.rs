//! The `vast-sim serve` binary: writes a kubeconfig with context `vast-sim`, serves the
//! configured nodes, and exits cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn serve_writes_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    let config = dir.path().join("sim.yaml");
    std::fs::write(
        &config,
        "nodes:\n  count: 3\n  cpu: \"8\"\n  memory: 32Gi\npods:\n  job_duration_ms: 50\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vast-sim"))
        .args(["serve", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no kubeconfig written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains("current-context: vast-sim"), "{text}");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some("vast-sim".into()),
        ..Default::default()
    };
    let client_config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    let client = kube::Client::try_from(client_config).unwrap();
    let nodes: Api<Node> = Api::all(client);
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );

    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: sending a signal to our own child process
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert!(out.contains("kubeconfig written to"), "{out}");
    assert!(out.contains("shutting down"), "{out}");
}
