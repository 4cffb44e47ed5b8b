//! SPDY/3.1 as the kubelet speaks it to kubectl for port-forward and exec. kubectl ≤ 1.29 (and
//! any kubectl with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false` or
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`) upgrades the HTTP connection to `SPDY/3.1`;
//! kubectl ≥ 1.30's port-forward tunnels the same frames in websocket binary messages
//! (subprotocol `SPDY/3.1+portforward.k8s.io`). Only what those clients use is implemented:
//! SYN_STREAM (headers zlib-compressed with the SPDY/3 dictionary), SYN_REPLY, DATA with FIN,
//! RST_STREAM, PING and GOAWAY; SETTINGS, HEADERS and WINDOW_UPDATE are read and ignored (Go's
//! spdystream does no flow control). One reader task owns the header decompressor and routes
//! data to the stream it belongs to; one writer task owns the compressor and the connection's
//! sending half, so a stream's SYN_REPLY always precedes its data.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures::{Sink, SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::ws::{status, Reply, Ws};

/// The `Upgrade` token of an SPDY request.
pub(crate) const UPGRADE_TOKEN: &str = "SPDY/3.1";
/// The websocket subprotocol of SPDY tunnelled in websocket messages (port-forward).
pub(crate) const WS_PORTFORWARD: &str = "SPDY/3.1+portforward.k8s.io";
/// `X-Stream-Protocol-Version` of port-forward.
pub(crate) const PORTFORWARD: &str = "portforward.k8s.io";
/// `X-Stream-Protocol-Version`s of exec, most preferred first.
pub(crate) const EXEC: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// The SPDY/3 header compression dictionary (1,423 bytes, adler32 0xe3c6a7c2).
const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// Frames larger than this are a protocol error (kubectl sends at most 32 KiB of data).
const MAX_FRAME: usize = 16 << 20;

/// Is this an SPDY upgrade request (`Upgrade: SPDY/3.1`)?
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_TOKEN))
}

/// The 101 answer to an SPDY upgrade, with the first of `supported` the client offered in
/// `X-Stream-Protocol-Version`; a `Status` 403 (as the kubelet answers) when none was offered.
pub(crate) fn accept(
    req: &Request<Incoming>,
    supported: &[&'static str],
) -> Result<(Reply, &'static str), Box<Reply>> {
    let (offered, chosen) = super::ws::negotiate(req, PROTOCOL_HEADER, supported);
    let Some(proto) = chosen else {
        return Err(Box::new(status(
            403,
            "Forbidden",
            &format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"),
        )));
    };
    let mut r = Response::new(http_body_util::Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static(UPGRADE_TOKEN));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(PROTOCOL_HEADER, HeaderValue::from_static(proto));
    Ok((r, proto))
}

/// A stream the client opened.
pub(crate) struct Stream {
    pub id: u32,
    headers: Vec<(String, String)>,
    /// The client's data on this stream; closed at its FIN or reset.
    pub data: mpsc::Receiver<Bytes>,
}

impl Stream {
    /// A header's value (names are lowercase in SPDY).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Out {
    Reply(u32),
    Data(u32, Bytes, bool),
    Reset(u32, u32),
    Ping(u32),
    GoAway,
}

/// The sending side of a session, cheap to clone.
#[derive(Clone)]
pub(crate) struct Sender {
    tx: mpsc::Sender<Out>,
}

impl Sender {
    /// Data on stream `id`; false once the connection is gone.
    pub async fn data(&self, id: u32, data: Bytes) -> bool {
        self.tx.send(Out::Data(id, data, false)).await.is_ok()
    }

    /// Half-closes stream `id` (an empty DATA frame with FIN).
    pub async fn fin(&self, id: u32) -> bool {
        self.tx
            .send(Out::Data(id, Bytes::new(), true))
            .await
            .is_ok()
    }

    /// Resets stream `id` (RST_STREAM with CANCEL).
    pub async fn reset(&self, id: u32) {
        let _ = self.tx.send(Out::Reset(id, 5)).await;
    }
}

/// The connection a session runs over.
pub(crate) enum Transport {
    /// The upgraded HTTP connection (`Upgrade: SPDY/3.1`).
    Raw(hyper::upgrade::Upgraded),
    /// Websocket binary messages carrying the byte stream (`SPDY/3.1+portforward.k8s.io`).
    Websocket(Box<Ws>),
}

type Writer = Pin<Box<dyn AsyncWrite + Send>>;
type WsSink = Pin<Box<dyn Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Send>>;

enum Outlet {
    Raw(Writer),
    Ws(WsSink),
}

impl Outlet {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        match self {
            Outlet::Raw(w) => {
                w.write_all(&bytes).await?;
                w.flush().await
            }
            Outlet::Ws(s) => s
                .send(Message::Binary(bytes))
                .await
                .map_err(io::Error::other),
        }
    }

    async fn close(&mut self) {
        match self {
            Outlet::Raw(w) => {
                let _ = w.shutdown().await;
            }
            Outlet::Ws(s) => {
                let _ = s.send(super::ws::normal_close()).await;
            }
        }
    }
}

/// A running session.
pub(crate) struct Session {
    pub sender: Sender,
    /// The streams the client opens, in order; closed when the client goes away.
    pub streams: mpsc::Receiver<Stream>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Ends the session gracefully: what was queued is sent, then the connection is closed.
    pub async fn finish(self) {
        let Session {
            sender,
            streams,
            reader,
            writer,
        } = self;
        drop(streams);
        reader.abort();
        let _ = reader.await;
        drop(sender);
        let _ = writer.await;
    }

    /// Cuts the connection at once (the port-forward drop fault).
    pub fn cut(self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Starts a session over `transport`. The connection stays open until the client goes away
/// and every [`Sender`] clone is dropped, or [`Session::finish`] / [`Session::cut`].
pub(crate) fn serve(transport: Transport) -> Session {
    let (reader, outlet): (Pin<Box<dyn AsyncRead + Send>>, Outlet) = match transport {
        Transport::Raw(up) => {
            let (r, w) = tokio::io::split(hyper_util::rt::TokioIo::new(up));
            (Box::pin(r), Outlet::Raw(Box::pin(w)))
        }
        Transport::Websocket(ws) => {
            let (sink, stream) = (*ws).split();
            let bytes = stream.filter_map(|m| async move {
                match m {
                    Ok(Message::Binary(d)) => Some(Ok(d)),
                    Ok(Message::Close(_)) => None,
                    Ok(_) => None,
                    Err(e) => Some(Err(io::Error::other(e))),
                }
            });
            let reader = tokio_util::io::StreamReader::new(Box::pin(bytes));
            (Box::pin(reader), Outlet::Ws(Box::pin(sink)))
        }
    };
    let (tx, rx) = mpsc::channel::<Out>(64);
    let (streams_tx, streams_rx) = mpsc::channel::<Stream>(16);
    let writer = tokio::spawn(write_loop(rx, outlet));
    let reader = tokio::spawn(read_loop(reader, tx.clone(), streams_tx));
    Session {
        sender: Sender { tx },
        streams: streams_rx,
        reader,
        writer,
    }
}

async fn write_loop(mut rx: mpsc::Receiver<Out>, mut outlet: Outlet) {
    let mut deflate = Compress::new(Compression::default(), true);
    while let Some(out) = rx.recv().await {
        let frame = match out {
            Out::Reply(id) => {
                // An empty header block: the kubelet's replies carry no headers.
                let block = match compress(&mut deflate, &0u32.to_be_bytes()) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "spdy: compressing a reply failed");
                        break;
                    }
                };
                let mut payload = BytesMut::with_capacity(4 + block.len());
                payload.put_u32(id & 0x7fff_ffff);
                payload.extend_from_slice(&block);
                control(SYN_REPLY, 0, &payload)
            }
            Out::Data(id, data, fin) => {
                let mut f = BytesMut::with_capacity(8 + data.len());
                f.put_u32(id & 0x7fff_ffff);
                f.put_u32((u32::from(if fin { FLAG_FIN } else { 0 }) << 24) | data.len() as u32);
                f.extend_from_slice(&data);
                f.freeze()
            }
            Out::Reset(id, code) => {
                let mut p = BytesMut::with_capacity(8);
                p.put_u32(id & 0x7fff_ffff);
                p.put_u32(code);
                control(RST_STREAM, 0, &p)
            }
            Out::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Out::GoAway => control(GOAWAY, 0, &[0u8; 8]),
        };
        if outlet.send(frame).await.is_err() {
            return;
        }
    }
    outlet.close().await;
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(8 + payload.len());
    f.put_u16(0x8000 | 3);
    f.put_u16(kind);
    f.put_u32((u32::from(flags) << 24) | payload.len() as u32);
    f.extend_from_slice(payload);
    f.freeze()
}

fn compress(c: &mut Compress, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut used = 0;
    loop {
        let before = c.total_in();
        c.compress_vec(&input[used..], &mut out, FlushCompress::Sync)
            .map_err(|e| e.to_string())?;
        used += (c.total_in() - before) as usize;
        if used >= input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(256);
    }
}

fn inflate(d: &mut Decompress, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len() * 4 + 256);
    let mut used = 0;
    loop {
        let before = d.total_in();
        let res = d.decompress_vec(&input[used..], &mut out, FlushDecompress::Sync);
        used += (d.total_in() - before) as usize;
        match res {
            Ok(_) => {
                if used >= input.len() && out.len() < out.capacity() {
                    return Ok(out);
                }
                if out.len() > MAX_FRAME {
                    return Err("header block too large".into());
                }
                out.reserve(4096);
            }
            Err(e) if e.needs_dictionary().is_some() => {
                d.set_dictionary(DICTIONARY).map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Parses an uncompressed SPDY/3 header block (`u32` count, then `u32`-length-prefixed names
/// and values; several values of one name are NUL-separated).
fn header_block(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("truncated header block".into());
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn word(b: &mut &[u8]) -> Result<usize, String> {
        let w = take(b, 4)?;
        Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize)
    }
    let mut b = b;
    let n = word(&mut b)?;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = word(&mut b)?;
        let name = String::from_utf8_lossy(take(&mut b, len)?).to_ascii_lowercase();
        let len = word(&mut b)?;
        let value = String::from_utf8_lossy(take(&mut b, len)?).into_owned();
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Ok(out)
}

async fn read_loop(
    mut r: Pin<Box<dyn AsyncRead + Send>>,
    out: mpsc::Sender<Out>,
    new_streams: mpsc::Sender<Stream>,
) {
    let mut inflater = Decompress::new(true);
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let mut head = [0u8; 8];
        if r.read_exact(&mut head).await.is_err() {
            break;
        }
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            let _ = out.send(Out::GoAway).await;
            break;
        }
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).await.is_err() {
            break;
        }
        if first & 0x8000_0000 == 0 {
            let id = first & 0x7fff_ffff;
            if let Some(tx) = open.get(&id) {
                if !payload.is_empty() && tx.send(Bytes::from(payload)).await.is_err() {
                    open.remove(&id);
                }
            }
            if flags & FLAG_FIN != 0 {
                open.remove(&id);
            }
            continue;
        }
        let version = (first >> 16) & 0x7fff;
        let kind = (first & 0xffff) as u16;
        if version != 3 {
            tracing::warn!(version, "spdy: unsupported version");
            let _ = out.send(Out::GoAway).await;
            break;
        }
        match kind {
            SYN_STREAM if payload.len() >= 10 => {
                let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                let headers =
                    match inflate(&mut inflater, &payload[10..]).and_then(|b| header_block(&b)) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::warn!(error = %e, "spdy: unreadable SYN_STREAM headers");
                            let _ = out.send(Out::GoAway).await;
                            break;
                        }
                    };
                if out.send(Out::Reply(id)).await.is_err() {
                    break;
                }
                let (tx, rx) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    open.insert(id, tx);
                }
                let stream = Stream {
                    id,
                    headers,
                    data: rx,
                };
                if new_streams.send(stream).await.is_err() {
                    // Nobody takes new streams any more: refuse it.
                    open.remove(&id);
                    let _ = out.send(Out::Reset(id, 3)).await;
                }
            }
            RST_STREAM if payload.len() >= 4 => {
                let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                open.remove(&id);
            }
            PING if payload.len() == 4 => {
                let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                // Answer the client's (odd) pings; ours would be even.
                if id % 2 == 1 && out.send(Out::Ping(id)).await.is_err() {
                    break;
                }
            }
            GOAWAY => break,
            _ => {}
        }
    }
    // The client is gone: every stream's data ends here.
    drop(open);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in DICTIONARY {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn header_blocks_round_trip_through_a_dictionary_compressor() {
        // What Go's framer does: zlib with the SPDY dictionary, a sync flush per block.
        let mut block = Vec::new();
        block.extend_from_slice(&2u32.to_be_bytes());
        for (n, v) in [("streamtype", "data"), ("port", "9000")] {
            block.extend_from_slice(&(n.len() as u32).to_be_bytes());
            block.extend_from_slice(n.as_bytes());
            block.extend_from_slice(&(v.len() as u32).to_be_bytes());
            block.extend_from_slice(v.as_bytes());
        }
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(DICTIONARY).expect("dictionary");
        let first = compress(&mut c, &block).expect("compress");
        let second = compress(&mut c, &block).expect("compress");
        let mut d = Decompress::new(true);
        for wire in [first, second] {
            let plain = inflate(&mut d, &wire).expect("inflate");
            assert_eq!(
                header_block(&plain).expect("parse"),
                vec![
                    ("streamtype".to_string(), "data".to_string()),
                    ("port".to_string(), "9000".to_string())
                ]
            );
        }
    }

    #[test]
    fn a_truncated_header_block_is_an_error() {
        assert!(header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
    }
}
