//! Shared helpers of the API/controller tests: start a sim, build a kube client for it, wait
//! for conditions with a generous deadline.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use vast_sim::config::SimConfig;
use vast_sim::server::{Sim, SimHandle};

/// Deadline for eventual conditions: generous, the machine may be loaded.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub async fn start() -> (SimHandle, kube::Client) {
    start_with(SimConfig::default()).await
}

pub async fn start_with(config: SimConfig) -> (SimHandle, kube::Client) {
    let sim = Sim::start(config).await.expect("sim starts");
    let client = client_for(&sim);
    (sim, client)
}

pub fn client_for(sim: &SimHandle) -> kube::Client {
    let mut config = kube::Config::new(sim.url().parse().expect("sim url"));
    config.default_namespace = "default".into();
    kube::Client::try_from(config).expect("kube client")
}

/// A client without kube's built-in retry of 429/503/504, to observe faults as they are.
pub fn client_without_retry(sim: &SimHandle) -> kube::Client {
    let mut config = kube::Config::new(sim.url().parse().expect("sim url"));
    config.default_namespace = "default".into();
    config.default_retry = false;
    kube::Client::try_from(config).expect("kube client")
}

/// Polls `f` until it returns `Some`, failing the test after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a raw request to the sim (admin endpoints) and returns (status, body).
pub async fn raw(client: &kube::Client, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .expect("request");
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("send");
    let status = resp.status().as_u16();
    use http_body_util::BodyExt;
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Runs a client command (kubectl, python3) to its end, feeding `stdin` if given (the
/// command's stdin must be piped): (exit code, stdout, stderr); -1 when killed by a signal.
pub async fn run_client(
    mut cmd: tokio::process::Command,
    stdin: Option<&str>,
    limit: Duration,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = cmd
        .spawn()
        .expect("the client is installed (.ci/run installs it)");
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).await.expect("write stdin");
        }
    }
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("the client finished in time")
        .expect("the client ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
