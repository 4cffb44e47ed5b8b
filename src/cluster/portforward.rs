//! The port-forward supervisor: a local TCP listener on `127.0.0.1:<ephemeral>` whose every
//! accepted connection gets its own kube-rs websocket port-forward stream to a pod port
//! (kube-rs binds no local socket and multiplexes nothing, so one stream per connection is
//! also what keeps one broken stream from breaking the others).
//!
//! Opening a stream is retried with the engine's schedule ([`RetryPolicy::retry_if`]:
//! exponential backoff with jitter, at most 12 attempts and 60 s, see [`Reconnect`]); before
//! each retry the pod is looked up again, so a pod that was restarted or recreated under the
//! same name is found once it is Running again. A stream that dies mid-transfer closes its
//! local connection: the client (a `Range` resume, the step's retry from its cursor)
//! reconnects and gets a fresh stream, so a drop costs at most the request in flight. A stream that goes dead without closing (the client sent
//! bytes and nothing came back for [`Reconnect::stall_timeout`]) is detected and closed the
//! same way. [`PortForward::probe`] checks end to end that a stream can be opened now; the
//! counters tell how often streams were opened, failed, stalled or re-established.

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
    /// The schedule of the attempts to open one stream: backoff with jitter, bounded by
    /// `max_attempts` and `max_elapsed`; then the connection is given up (closed).
    pub policy: RetryPolicy,
    /// A stream that got bytes from the client and sent nothing back for this long is dead.
    pub stall_timeout: Duration,
}

impl Default for Reconnect {
    /// 12 attempts, 100 ms doubling to 5 s (±20 %), at most 60 s: a pod restart is ridden out.
    fn default() -> Self {
        Reconnect {
            policy: RetryPolicy {
                max_attempts: 12,
                initial_interval: Duration::from_millis(100),
                multiplier: 2.0,
                max_interval: Duration::from_secs(5),
                max_elapsed: Some(Duration::from_secs(60)),
                jitter: 0.2,
            },
            stall_timeout: Duration::from_secs(60),
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
    /// Streams closed because they stopped answering.
    pub stalled: AtomicU64,
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
                            // E.g. out of file descriptors: wait, keep the live connections.
                            tracing::warn!("port-forward listener for pod '{}': {e}", t.pod);
                            tokio::time::sleep(Duration::from_millis(100)).await;
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

    /// A forwarded stream used directly, without the local TCP hop (one websocket per
    /// stream, opened with the reconnect policy). For bulk transfers done by vast itself; other
    /// clients connect to [`PortForward::local_addr`].
    pub async fn stream(&self) -> Result<ForwardedStream, PortForwardError> {
        let (forwarder, io) = open(&self.target).await?;
        self.target
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Ok(ForwardedStream {
            forwarder: Some(forwarder),
            io: Box::new(io),
        })
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

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One forwarded stream (see [`PortForward::stream`]); dropping it closes the websocket.
pub struct ForwardedStream {
    forwarder: Option<kube::api::Portforwarder>,
    io: Box<dyn Io>,
}

impl Drop for ForwardedStream {
    fn drop(&mut self) {
        if let Some(f) = self.forwarder.take() {
            f.abort();
        }
    }
}

impl tokio::io::AsyncRead for ForwardedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ForwardedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why one attempt to open a stream failed.
#[derive(Debug)]
enum OpenError {
    /// Worth another attempt (the pod may be restarting, the API server busy).
    Retry { target: String, message: String },
    /// Retrying cannot help (e.g. 403 on the portforward subresource).
    Fatal { target: String, message: String },
}

impl OpenError {
    fn message(self) -> String {
        match self {
            OpenError::Retry { message, .. } | OpenError::Fatal { message, .. } => message,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Retry { target, message } | OpenError::Fatal { target, message } => {
                write!(f, "port-forward to {target}: {message}")
            }
        }
    }
}

/// Opens a stream to the target, retried with the reconnect policy
/// ([`RetryPolicy::retry_if`]: backoff with jitter, bounded by attempts and time); before each
/// retry the pod is looked up again (it may have been recreated, or be restarting).
async fn open(
    t: &Target,
) -> Result<
    (
        kube::api::Portforwarder,
        impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    ),
    PortForwardError,
> {
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let target = format!("pod '{}' port {}", t.pod, t.port);
    let target = target.as_str();
    let result = t
        .reconnect
        .policy
        .retry_if(
            || {
                let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                let retry = move |message: String| OpenError::Retry {
                    target: target.to_string(),
                    message,
                };
                async move {
                    if attempt > 1 {
                        t.stats.open_failures.fetch_add(1, Ordering::Relaxed);
                        match t.pods.get_opt(&t.pod).await {
                            Ok(Some(p)) => {
                                let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                                if phase != "Running" {
                                    return Err(retry(format!(
                                        "pod '{}' is {phase}, not Running",
                                        t.pod
                                    )));
                                }
                            }
                            Ok(None) => {
                                return Err(retry(format!("pod '{}' does not exist", t.pod)))
                            }
                            Err(e) => return Err(retry(super::error::message(&e))),
                        }
                    }
                    match t.pods.portforward(&t.pod, &[t.port]).await {
                        Ok(mut f) => match f.take_stream(t.port) {
                            Some(s) => {
                                t.stats.streams.fetch_add(1, Ordering::Relaxed);
                                Ok((f, s))
                            }
                            None => Err(retry("the port-forward gave no stream".into())),
                        },
                        Err(e)
                            if !super::error::classify(&e).is_transient()
                                && !super::error::is_not_found(&e) =>
                        {
                            Err(OpenError::Fatal {
                                target: target.to_string(),
                                message: super::error::message(&e),
                            })
                        }
                        Err(e) => Err(retry(super::error::message(&e))),
                    }
                }
            },
            |e| matches!(e, OpenError::Retry { .. }),
        )
        .await;
    result.map_err(|e| {
        t.stats.given_up.fetch_add(1, Ordering::Relaxed);
        PortForwardError::Stream {
            pod: t.pod.clone(),
            port: t.port,
            message: e.message(),
        }
    })
}

/// Copies bytes both ways between `conn` and a fresh stream until either ends.
async fn bridge(t: Target, conn: TcpStream) {
    let (forwarder, stream) = match open(&t).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    match relay(conn, stream, t.reconnect.stall_timeout).await {
        Ok(()) => {}
        Err(RelayError::Stalled) => {
            t.stats.stalled.fetch_add(1, Ordering::Relaxed);
            // A dead websocket never ends on its own: stop its task.
            forwarder.abort();
            tracing::warn!(
                "port-forward stream to pod '{}' port {} stopped answering for {} s; closed (the client reconnects)",
                t.pod,
                t.port,
                t.reconnect.stall_timeout.as_secs()
            );
        }
        Err(RelayError::Io(e)) => tracing::debug!(
            "port-forward connection to pod '{}' port {} ended: {e}",
            t.pod,
            t.port
        ),
    }
    let joined = tokio::time::timeout(Duration::from_secs(5), forwarder.join()).await;
    if let Ok(Err(e)) = joined {
        tracing::debug!(
            "port-forward to pod '{}' port {} closed with: {e}",
            t.pod,
            t.port
        );
    }
}

/// Why a relay ended early.
#[derive(Debug)]
pub enum RelayError {
    /// The far side stopped answering: bytes went out, nothing came back for the timeout.
    Stalled,
    Io(std::io::Error),
}

/// Copies both ways between `near` (the local client) and `far` (the forwarded stream) until
/// either side closes, and detects a dead far side: when the last bytes that moved went from
/// the client to the far side and nothing moved either way for `stall`, the relay stops with
/// [`RelayError::Stalled`] (both ends are closed by dropping them). A slow upload keeps moving
/// bytes, so it never stalls; idle connections (the last bytes were an answer) never stall.
/// A client's half-close (EOF) is passed on; kube-rs then closes the whole stream, which is
/// fine for HTTP clients (they do not half-close while waiting for an answer).
pub async fn relay<A, B>(near: A, far: B, stall: Duration) -> Result<(), RelayError>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut near_r, mut near_w) = tokio::io::split(near);
    let (mut far_r, mut far_w) = tokio::io::split(far);
    // When bytes last moved, and whether they went up (client → far side).
    let last = std::sync::Mutex::new((tokio::time::Instant::now(), false));
    let moved = |up: bool| {
        if let Ok(mut l) = last.lock() {
            *l = (tokio::time::Instant::now(), up);
        }
    };
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = near_r.read(&mut buf).await?;
            if n == 0 {
                far_w.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            far_w.write_all(&buf[..n]).await?;
            moved(true);
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = far_r.read(&mut buf).await?;
            if n == 0 {
                near_w.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            near_w.write_all(&buf[..n]).await?;
            moved(false);
        }
    };
    let watchdog = async {
        let tick = (stall / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            let (at, up) = last
                .lock()
                .map(|l| *l)
                .unwrap_or((tokio::time::Instant::now(), false));
            if up && at.elapsed() >= stall {
                return;
            }
        }
    };
    tokio::pin!(up, down, watchdog);
    let mut up_done = false;
    loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                r.map_err(RelayError::Io)?;
                up_done = true;
            }
            r = &mut down => return r.map_err(RelayError::Io),
            _ = &mut watchdog => return Err(RelayError::Stalled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_far_side_that_stops_answering_is_detected() {
        let (client, near) = tokio::io::duplex(1024);
        let (far, mut server) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay(near, far, Duration::from_secs(30)));
        let (mut cr, mut cw) = tokio::io::split(client);
        // A request answered: fine. Then idle for long: still fine (nothing outstanding).
        cw.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        server.read_exact(&mut b).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        cr.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!relay.is_finished(), "an idle connection is not a dead one");
        // A request never answered: stalled after the timeout.
        cw.write_all(b"more").await.unwrap();
        server.read_exact(&mut b).await.unwrap();
        tokio::time::sleep(Duration::from_secs(31)).await;
        let r = relay.await.unwrap();
        assert!(matches!(r, Err(RelayError::Stalled)), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_upload_is_not_a_dead_stream() {
        let (client, near) = tokio::io::duplex(1024);
        let (far, mut server) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay(near, far, Duration::from_secs(30)));
        let (_cr, mut cw) = tokio::io::split(client);
        // 10 minutes of a trickle: a few bytes every 20 s.
        let mut b = [0u8; 3];
        for _ in 0..30 {
            cw.write_all(b"abc").await.unwrap();
            server.read_exact(&mut b).await.unwrap();
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        assert!(
            !relay.is_finished(),
            "a slow upload was taken for a dead stream"
        );
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_until_the_far_side_closes() {
        let (client, near) = tokio::io::duplex(64);
        let (far, mut server) = tokio::io::duplex(64);
        let relay = tokio::spawn(relay(near, far, Duration::from_secs(30)));
        let (mut cr, mut cw) = tokio::io::split(client);
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            cw.write_all(&d2).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, data);
        server.write_all(b"bye").await.unwrap();
        drop(server);
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"bye");
        assert!(relay.await.unwrap().is_ok());
    }
}
