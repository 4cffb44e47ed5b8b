//! Port-forward sessions. Over a websocket: one TCP connection per requested port, data on
//! channel `2i`, errors on `2i+1`, each channel opened by a 3-byte `[ch, port_lo, port_hi]` frame
//! (the kubelet's `v4.channel.k8s.io` framing). Over SPDY (`run_spdy`): a pair of streams per
//! local connection. Honours the "drop after N bytes" fault by cutting the
//! websocket without a close frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::spdy;
use super::ws::Ws;
use crate::faults::Faults;

/// One requested port: the container port and the local endpoint serving it, if any.
pub(crate) struct Target {
    pub port: u16,
    pub addr: Option<SocketAddr>,
}

fn frame(ch: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(ch);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Run one port-forward session to its end. `pod` names the pod in error messages.
pub(crate) async fn run(ws: Ws, targets: Vec<Target>, faults: Arc<Faults>, pod: String) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let drop_now = CancellationToken::new();

    // Initial frames: data and error channel of every port carry the port number.
    for (i, t) in targets.iter().enumerate() {
        let [lo, hi] = t.port.to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if sink
                .send(Message::Binary(vec![ch, lo, hi].into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return None;
            }
        }
        Some(sink)
    });

    let mut inputs: Vec<mpsc::Sender<Bytes>> = Vec::new();
    let mut tasks = Vec::new();
    let n_ports = targets.len();
    // Each port reports here when its pod-side connection has ended (or never started).
    let (done_tx, mut done_rx) = mpsc::channel::<()>(n_ports.max(1));
    for (i, t) in targets.into_iter().enumerate() {
        let (in_tx, in_rx) = mpsc::channel::<Bytes>(32);
        inputs.push(in_tx);
        let budget = faults.portforward_budget(t.port);
        let ctx = PortCtx {
            out: tx.clone(),
            budget,
            drop_now: drop_now.clone(),
            pod: pod.clone(),
            done: done_tx.clone(),
        };
        tasks.push(tokio::spawn(port_stream(i, t, in_rx, ctx)));
    }
    drop(done_tx);
    let mut finished = 0;

    loop {
        let msg = tokio::select! {
            _ = drop_now.cancelled() => break,
            Some(()) = done_rx.recv() => {
                // All pod-side connections closed: end the session, as the kubelet does.
                finished += 1;
                if finished == n_ports {
                    break;
                }
                continue;
            }
            m = stream.next() => m,
        };
        let data = match msg {
            Some(Ok(Message::Binary(d))) => d,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let Some((&ch, payload)) = data.split_first() else {
            continue;
        };
        if ch % 2 != 0 || payload.is_empty() {
            continue;
        }
        if let Some(input) = inputs.get(usize::from(ch / 2)) {
            // A closed input means that port's stream is gone; ignore further data for it.
            let _ = input.send(data.slice(1..)).await;
        }
    }

    drop(inputs);
    for t in &tasks {
        t.abort();
    }
    drop(tx);
    if drop_now.is_cancelled() {
        // Fault: cut the connection without a close frame.
        writer.abort();
        drop(stream);
    } else if let Ok(Some(mut sink)) = writer.await {
        let _ = sink.send(super::ws::normal_close()).await;
    }
}

/// The "drop after N bytes" fault of one forwarded connection (both directions count).
#[derive(Clone)]
struct Budget {
    limit: Option<u64>,
    used: Arc<AtomicU64>,
    drop_now: CancellationToken,
}

impl Budget {
    fn new(limit: Option<u64>, drop_now: CancellationToken) -> Budget {
        Budget {
            limit,
            used: Arc::new(AtomicU64::new(0)),
            drop_now,
        }
    }

    /// How many of `n` more bytes may pass; cancels the session when the budget is spent.
    fn take(&self, n: usize) -> usize {
        let Some(limit) = self.limit else { return n };
        let before = self.used.fetch_add(n as u64, Ordering::SeqCst);
        let left = limit.saturating_sub(before);
        if (n as u64) >= left {
            self.drop_now.cancel();
            left as usize
        } else {
            n
        }
    }
}

/// Client → pod: what arrives on `input` is written to the pod's port; its end half-closes it.
async fn pump_up(
    mut input: mpsc::Receiver<Bytes>,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    allow: Budget,
) {
    while let Some(chunk) = input.recv().await {
        let n = allow.take(chunk.len());
        if n > 0 && w.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        if n < chunk.len() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

struct PortCtx {
    out: mpsc::Sender<Message>,
    budget: Option<u64>,
    drop_now: CancellationToken,
    pod: String,
    done: mpsc::Sender<()>,
}

async fn port_stream(i: usize, t: Target, mut input: mpsc::Receiver<Bytes>, ctx: PortCtx) {
    let PortCtx {
        out,
        budget,
        drop_now,
        pod,
        done,
    } = ctx;
    let data_ch = 2 * i as u8;
    let err_ch = data_ch + 1;
    let connected = match t.addr {
        Some(addr) => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
        None => Err("connection refused".to_string()),
    };
    let tcp = match connected {
        Ok(s) => s,
        Err(e) => {
            let msg = format!(
                "error forwarding port {} to pod {pod}: failed to connect to localhost:{}: {e}",
                t.port, t.port
            );
            let _ = out.send(frame(err_ch, msg.as_bytes())).await;
            let _ = done.send(()).await;
            // Keep draining input so the session reader never blocks on this port.
            while input.recv().await.is_some() {}
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut r, w) = tcp.into_split();
    let allow = Budget::new(budget, drop_now);
    let up = pump_up(input, w, allow.clone());
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let allowed = allow.take(n);
            if allowed > 0 && out.send(frame(data_ch, &buf[..allowed])).await.is_err() {
                return;
            }
            if allowed < n {
                return;
            }
        }
    };
    let down = async move {
        down.await;
        let _ = done.send(()).await;
    };
    tokio::join!(up, down);
}

/// Run one SPDY port-forward session (kubectl's SPDY, or SPDY tunnelled in a websocket) to its
/// end. The client opens a pair of streams per local connection, `error` then `data`, with the
/// same `requestid` and the container `port`; the data stream is connected to that port, a
/// failure to connect is written on the error stream, and both are closed when the pod side
/// closes. `endpoints` maps the pod's ports to where they are served.
pub(crate) async fn run_spdy(
    session: spdy::Session,
    endpoints: HashMap<u16, SocketAddr>,
    faults: Arc<Faults>,
    pod: String,
) {
    let mut session = session;
    let drop_now = CancellationToken::new();
    let mut errors: HashMap<String, u32> = HashMap::new();
    let mut tasks = Vec::new();
    loop {
        let stream = tokio::select! {
            _ = drop_now.cancelled() => break,
            s = session.streams.recv() => match s {
                Some(s) => s,
                None => break,
            },
        };
        let request = stream.header("requestid").unwrap_or_default().to_string();
        match stream.header("streamtype") {
            Some("error") => {
                errors.insert(request, stream.id);
            }
            Some("data") => {
                let port = stream.header("port").and_then(|p| p.parse::<u16>().ok());
                let ctx = SpdyPort {
                    sender: session.sender.clone(),
                    error: errors.remove(&request),
                    addr: port.and_then(|p| endpoints.get(&p).copied()),
                    budget: port.and_then(|p| faults.portforward_budget(p)),
                    drop_now: drop_now.clone(),
                    pod: pod.clone(),
                };
                tasks.push(tokio::spawn(spdy_port(stream, port, ctx)));
            }
            _ => session.sender.reset(stream.id).await,
        }
    }
    for t in &tasks {
        t.abort();
    }
    if drop_now.is_cancelled() {
        session.cut();
    } else {
        session.finish().await;
    }
}

struct SpdyPort {
    sender: spdy::Sender,
    error: Option<u32>,
    addr: Option<SocketAddr>,
    budget: Option<u64>,
    drop_now: CancellationToken,
    pod: String,
}

async fn spdy_port(stream: spdy::Stream, port: Option<u16>, ctx: SpdyPort) {
    let SpdyPort {
        sender,
        error,
        addr,
        budget,
        drop_now,
        pod,
    } = ctx;
    let id = stream.id;
    let input = stream.data;
    let connected = match (port, addr) {
        (None, _) => Err("invalid or missing port header".to_string()),
        (Some(_), Some(addr)) => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
        (Some(_), None) => Err("connection refused".to_string()),
    };
    let tcp = match connected {
        Ok(s) => s,
        Err(e) => {
            let p = port.map(|p| p.to_string()).unwrap_or_default();
            let msg = format!(
                "error forwarding port {p} to pod {pod}: failed to connect to localhost:{p}: {e}"
            );
            if let Some(err) = error {
                sender.data(err, Bytes::from(msg)).await;
                sender.fin(err).await;
            }
            sender.fin(id).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut r, w) = tcp.into_split();
    let allow = Budget::new(budget, drop_now);
    let up = pump_up(input, w, allow.clone());
    let down_sender = sender.clone();
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let allowed = allow.take(n);
            if allowed > 0
                && !down_sender
                    .data(id, Bytes::copy_from_slice(&buf[..allowed]))
                    .await
            {
                return;
            }
            if allowed < n {
                return;
            }
        }
        down_sender.fin(id).await;
        if let Some(err) = error {
            down_sender.fin(err).await;
        }
    };
    tokio::join!(up, down);
}
