//! The port-forward supervisor: a local TCP listener on `127.0.0.1:<ephemeral>` whose every
//! accepted connection gets its own kube-rs websocket port-forward stream to a pod port
//! (kube-rs binds no local socket and multiplexes nothing, so one stream per connection is
//! also what keeps one broken stream from breaking the others).
//!
//! Opening a stream is retried with exponential backoff; before each retry the pod is looked
//! up again, so a pod that was restarted or recreated under the same name is found once it is
//! Running again. A stream that dies mid-transfer closes its local connection: the client
//! (the S3 SDK's retry, a `Range` resume) reconnects and gets a fresh stream, so a drop costs
//! at most the request in flight. [`PortForward::probe`] checks end to end that a stream can
//! be opened now; the counters tell how often streams were opened, failed or re-established.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::engine::retry::RetryPolicy;

/// A problem with the port-forward.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    #[error(
        "cannot listen on 127.0.0.1 for the port-forward to pod '{pod}' port {port}: {source}"
    )]
    Bind {
        pod: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("port-forward to pod '{pod}' port {port} failed: {message}")]
    Stream {
        pod: String,
        port: u16,
        message: String,
    },
}

/// How stream openings are retried (each connection on its own).
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// Attempts to open one stream before its connection is given up (closed).
    pub attempts: u32,
    pub policy: RetryPolicy,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            attempts: 12,
            policy: RetryPolicy {
                max_attempts: 12,
                initial_interval: Duration::from_millis(100),
                multiplier: 2.0,
                max_interval: Duration::from_secs(5),
                max_elapsed: None,
                jitter: 0.0,
            },
        }
    }
}

/// Counters of a supervisor (for logs, tests and benchmarks).
#[derive(Debug, Default)]
pub struct Stats {
    /// Local connections accepted.
    pub connections: AtomicU64,
    /// Streams opened.
    pub streams: AtomicU64,
    /// Failed attempts to open a stream (each followed by a retry or by giving up).
    pub open_failures: AtomicU64,
    /// Connections given up after every attempt failed.
    pub given_up: AtomicU64,
}

#[derive(Clone)]
struct Target {
    pods: Api<Pod>,
    pod: String,
    port: u16,
    reconnect: Reconnect,
    stats: Arc<Stats>,
}

/// A running supervisor; dropping it closes the listener and every forwarded connection.
pub struct PortForward {
    addr: SocketAddr,
    target: Target,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PortForward({} -> pod/{}:{})",
            self.addr, self.target.pod, self.target.port
        )
    }
}

impl PortForward {
    /// Listens on a free loopback port and forwards each connection to `pod`:`port`.
    pub async fn start(pods: Api<Pod>, pod: &str, port: u16) -> Result<Self, PortForwardError> {
        Self::start_with(pods, pod, port, Reconnect::default()).await
    }

    pub async fn start_with(
        pods: Api<Pod>,
        pod: &str,
        port: u16,
        reconnect: Reconnect,
    ) -> Result<Self, PortForwardError> {
        let bind_err = |source| PortForwardError::Bind {
            pod: pod.to_string(),
            port,
            source,
        };
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let target = Target {
            pods,
            pod: pod.to_string(),
            port,
            reconnect,
            stats: Arc::new(Stats::default()),
        };
        let t = target.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task aborts them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((conn, _)) => {
                            t.stats.connections.fetch_add(1, Ordering::Relaxed);
                            conns.spawn(bridge(t.clone(), conn));
                        }
                        Err(e) => {
                            tracing::warn!("port-forward listener for pod '{}' failed: {e}", t.pod);
                            break;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self { addr, target, task })
    }

    /// The local address to connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> &Stats {
        &self.target.stats
    }

    /// Opens one stream now (with the reconnect policy) and closes it again: the pod is
    /// reachable through the API server and accepts the forward.
    pub async fn probe(&self) -> Result<(), PortForwardError> {
        let (forwarder, stream) = open(&self.target).await?;
        drop(stream);
        let _ = forwarder.join().await;
        Ok(())
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a stream to the target, retrying with backoff; before each retry the pod is looked
/// up again (it may have been recreated, or be restarting).
async fn open(
    t: &Target,
) -> Result<
    (
        kube::api::Portforwarder,
        impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    ),
    PortForwardError,
> {
    let mut last = String::new();
    for attempt in 1..=t.reconnect.attempts.max(1) {
        if attempt > 1 {
            t.stats.open_failures.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(t.reconnect.policy.base_delay(attempt - 1)).await;
            match t.pods.get_opt(&t.pod).await {
                Ok(Some(p)) => {
                    let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                    if phase != "Running" {
                        last = format!("pod '{}' is {phase}, not Running", t.pod);
                        continue;
                    }
                }
                Ok(None) => {
                    last = format!("pod '{}' does not exist", t.pod);
                    continue;
                }
                Err(e) => {
                    last = super::error::message(&e);
                    continue;
                }
            }
        }
        match t.pods.portforward(&t.pod, &[t.port]).await {
            Ok(mut f) => match f.take_stream(t.port) {
                Some(s) => {
                    t.stats.streams.fetch_add(1, Ordering::Relaxed);
                    return Ok((f, s));
                }
                None => last = "the port-forward gave no stream".into(),
            },
            Err(e) => {
                last = super::error::message(&e);
                if !super::error::classify(&e).is_transient() && !super::error::is_not_found(&e) {
                    break;
                }
            }
        }
        tracing::debug!(
            "port-forward to pod '{}' port {} (attempt {attempt}): {last}",
            t.pod,
            t.port
        );
    }
    t.stats.given_up.fetch_add(1, Ordering::Relaxed);
    Err(PortForwardError::Stream {
        pod: t.pod.clone(),
        port: t.port,
        message: last,
    })
}

/// Copies bytes both ways between `conn` and a fresh stream until either ends.
async fn bridge(t: Target, mut conn: TcpStream) {
    let (forwarder, mut stream) = match open(&t).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut stream).await {
        tracing::debug!(
            "port-forward connection to pod '{}' port {} ended: {e}",
            t.pod,
            t.port
        );
    }
    drop(stream);
    if let Err(e) = forwarder.join().await {
        tracing::debug!(
            "port-forward to pod '{}' port {} closed with: {e}",
            t.pod,
            t.port
        );
    }
}
