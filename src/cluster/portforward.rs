//! A local TCP listener on `127.0.0.1:<ephemeral>` that bridges every accepted connection to a
//! pod port through its own kube-rs port-forward (one websocket per connection, as kube-rs
//! binds no local socket and multiplexes nothing).
//!
//! No reconnect: a connection whose port-forward fails is closed, and the client (e.g. the S3
//! SDK's retry) opens a new one.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A problem starting the bridge.
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
}

/// A running bridge; dropping it closes the listener and every forwarded connection.
#[derive(Debug)]
pub struct PortForward {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PortForward {
    /// Listens on a free loopback port and forwards each connection to `pod`:`port`.
    pub async fn start(pods: Api<Pod>, pod: &str, port: u16) -> Result<Self, PortForwardError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| PortForwardError::Bind {
                pod: pod.to_string(),
                port,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| PortForwardError::Bind {
                pod: pod.to_string(),
                port,
                source,
            })?;
        let pod = pod.to_string();
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task aborts them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((conn, _)) => {
                            conns.spawn(bridge(pods.clone(), pod.clone(), port, conn));
                        }
                        Err(e) => {
                            tracing::warn!("port-forward listener for pod '{pod}' failed: {e}");
                            break;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self { addr, task })
    }

    /// The local address to connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes both ways between `conn` and a fresh port-forward stream until either ends.
async fn bridge(pods: Api<Pod>, pod: String, port: u16, mut conn: TcpStream) {
    let mut forwarder = match pods.portforward(&pod, &[port]).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("port-forward to pod '{pod}' port {port} failed: {e}");
            return;
        }
    };
    let Some(mut stream) = forwarder.take_stream(port) else {
        tracing::warn!("port-forward to pod '{pod}' gave no stream for port {port}");
        return;
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut stream).await {
        tracing::debug!("port-forward connection to pod '{pod}' port {port} ended: {e}");
    }
    drop(stream);
    if let Err(e) = forwarder.join().await {
        tracing::debug!("port-forward to pod '{pod}' port {port} closed with: {e}");
    }
}
