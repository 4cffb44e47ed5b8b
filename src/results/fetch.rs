//! Resumable HTTP download of one file (a run's archive, served by the robovast pod's HTTP
//! server, reached through the port-forward supervisor) into a local `.part` file.
//!
//! The cursor holds the offset and the SHA-256 state at that offset; it is saved (after the
//! file's bytes are synced) every [`CHECKPOINT`] bytes, so an interrupted download continues
//! with `Range: bytes=<offset>-` and re-sends at most one checkpoint interval. A stream that
//! breaks after making progress is reconnected here at once (a port-forward drop every few MiB
//! must not climb the engine's backoff schedule); only consecutive failures without progress
//! surface as an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, HOST, RANGE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::sha::Sha256State;

/// Bytes between two cursor checkpoints (the most a resume re-sends).
pub const CHECKPOINT: u64 = 4 * 1024 * 1024;
/// Silence on an open response body after which the connection counts as dead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a download stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchCursor {
    /// SHA-256 of the complete file (identifies the remote file version).
    pub sha256: String,
    pub size: u64,
    /// Bytes durably written to the `.part` file and hashed.
    pub offset: u64,
    pub hash: Sha256State,
    /// Bytes received over the network in total, including re-sent ones.
    #[serde(default)]
    pub received: u64,
}

impl FetchCursor {
    pub fn new(sha256: &str, size: u64) -> Self {
        FetchCursor {
            sha256: sha256.to_string(),
            size,
            offset: 0,
            hash: Sha256State::new(),
            received: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP download of {url} failed: {message}")]
    Http { url: String, message: String },
    /// The server does not have the file (any more).
    #[error("{url} not found on the pod's HTTP server (404)")]
    NotFound { url: String },
    /// The bytes do not hash to what the archiver reported: the local copy is discarded.
    #[error(
        "verification failed for {url}: expected SHA-256 {expected} ({size} bytes), got {actual}"
    )]
    Verify {
        url: String,
        expected: String,
        actual: String,
        size: u64,
    },
}

impl FetchError {
    /// HTTP trouble may pass; a local I/O error is classified by
    /// [`classify_io`](super::io::classify_io) (a read-only or full disk is permanent).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Http { .. } => true,
            FetchError::Io { source, .. } => super::io::is_transient_io(source),
            FetchError::NotFound { .. } | FetchError::Verify { .. } => false,
        }
    }
}

/// A byte stream an HTTP/1.1 request can run over (a TCP connection, a forwarded stream).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Opens a fresh connection to the server for each request.
pub trait Connect: Send + Sync {
    fn connect(&self) -> futures::future::BoxFuture<'_, Result<Box<dyn Io>, String>>;
    /// `host:port` for the `Host` header and messages.
    fn authority(&self) -> String;
}

/// Plain TCP to `addr`.
pub struct Tcp(pub SocketAddr);

impl Connect for Tcp {
    fn connect(&self) -> futures::future::BoxFuture<'_, Result<Box<dyn Io>, String>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(self.0)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s) as Box<dyn Io>)
        })
    }
    fn authority(&self) -> String {
        self.0.to_string()
    }
}

/// What the caller sees of a download in progress.
pub trait FetchSink: Send + Sync {
    /// A checkpoint: persist it.
    fn checkpoint(&self, cursor: &FetchCursor);
    /// Progress for display.
    fn progress(&self, done: u64, total: u64);
    /// Reconnections in a row without progress before giving up (the caller's retry takes
    /// over): the download step's `stalled_reconnects` budget.
    fn stalled_reconnects(&self) -> u32;
}

/// Downloads `http://<addr><path>` into `part`, continuing from `cursor` (which must describe
/// the same remote file: otherwise start with [`FetchCursor::new`]). On success `part` holds
/// exactly `cursor.size` bytes whose SHA-256 is `cursor.sha256`.
pub async fn fetch(
    server: &dyn Connect,
    path: &str,
    part: &Path,
    mut cursor: FetchCursor,
    sink: &dyn FetchSink,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<FetchCursor, FetchError> {
    let url = format!("http://{}{path}", server.authority());
    let io = |source| FetchError::Io {
        path: part.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(part)
        .await
        .map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    if len < cursor.offset {
        // The file lost bytes the cursor counted (it was replaced): start over.
        cursor = FetchCursor::new(&cursor.sha256, cursor.size);
    }
    // Bytes after the checkpoint were written but not checkpointed: they are fetched again.
    file.set_len(cursor.offset).await.map_err(io)?;
    let mut stalled = 0u32;
    while cursor.offset < cursor.size {
        if cancel.is_cancelled() {
            break;
        }
        let before = cursor.offset;
        match fetch_once(server, path, part, &mut file, &mut cursor, sink, cancel).await {
            Ok(()) => {}
            Err(e @ (FetchError::NotFound { .. } | FetchError::Io { .. })) => return Err(e),
            Err(e) => {
                if cursor.offset > before {
                    stalled = 0;
                } else {
                    stalled += 1;
                }
                if stalled >= sink.stalled_reconnects() {
                    return Err(e);
                }
                tracing::debug!("{e}; reconnecting at byte {}", cursor.offset);
                let pause = Duration::from_millis(100 * u64::from(stalled * stalled));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => {}
                }
            }
        }
    }
    file.sync_data().await.map_err(io)?;
    sink.checkpoint(&cursor);
    if cursor.offset < cursor.size {
        return Err(FetchError::Http {
            url,
            message: "cancelled".into(),
        });
    }
    let actual = cursor.hash.hex();
    if actual != cursor.sha256 {
        return Err(FetchError::Verify {
            url,
            expected: cursor.sha256.clone(),
            actual,
            size: cursor.size,
        });
    }
    Ok(cursor)
}

/// One HTTP request from `cursor.offset`; writes and hashes what arrives, checkpointing.
async fn fetch_once(
    server: &dyn Connect,
    path: &str,
    part: &Path,
    file: &mut tokio::fs::File,
    cursor: &mut FetchCursor,
    sink: &dyn FetchSink,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), FetchError> {
    let url = &format!("http://{}{path}", server.authority());
    let http = |message: String| FetchError::Http {
        url: url.to_string(),
        message,
    };
    let io = |source| FetchError::Io {
        path: part.to_path_buf(),
        source,
    };
    let stream = server.connect().await.map_err(http)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(format!("handshake: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let _guard = AbortOnDrop(driver);
    let mut req = Request::get(path).header(HOST, server.authority());
    if cursor.offset > 0 {
        req = req.header(RANGE, format!("bytes={}-", cursor.offset));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| http(format!("request: {e}")))?;
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let (start, total) = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| http("206 without a readable Content-Range".into()))?;
            if start != cursor.offset || total != cursor.size {
                return Err(http(format!(
                    "server sent bytes from {start} of {total}, expected from {} of {}",
                    cursor.offset, cursor.size
                )));
            }
        }
        StatusCode::OK => {
            let len = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if len.is_some_and(|l| l != cursor.size) {
                return Err(http(format!(
                    "the file on the server has {} bytes, the archiver reported {}",
                    len.unwrap_or(0),
                    cursor.size
                )));
            }
            if cursor.offset > 0 {
                // The server ignored the range: start again from byte 0.
                tracing::warn!("{url}: the server ignored the Range request; restarting");
                *cursor = FetchCursor {
                    received: cursor.received,
                    ..FetchCursor::new(&cursor.sha256, cursor.size)
                };
                file.set_len(0).await.map_err(io)?;
                use tokio::io::AsyncSeekExt;
                file.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
            }
        }
        StatusCode::NOT_FOUND => {
            return Err(FetchError::NotFound {
                url: url.to_string(),
            })
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            return Err(http(format!(
                "416 for a range from byte {} (the file is smaller than reported)",
                cursor.offset
            )))
        }
        s => return Err(http(format!("HTTP {s}"))),
    }
    {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(cursor.offset))
            .await
            .map_err(io)?;
    }
    let mut body = resp.into_body();
    let mut since_checkpoint = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let result = loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(READ_TIMEOUT, body.frame()) => f,
            _ = cancel.cancelled() => break Ok(()),
        };
        let frame = match frame {
            Err(_) => break Err(http(format!("no data for {} s", READ_TIMEOUT.as_secs()))),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(http(format!("body: {e}"))),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = cursor.size - (cursor.offset + buf.len() as u64);
        let data = &data[..data.len().min(room as usize)];
        cursor.received += data.len() as u64;
        buf.extend_from_slice(data);
        if buf.len() >= 1 << 20 {
            flush(file, &mut buf, cursor).await.map_err(io)?;
            since_checkpoint += 1 << 20;
        }
        if since_checkpoint >= CHECKPOINT {
            file.sync_data().await.map_err(io)?;
            sink.checkpoint(cursor);
            since_checkpoint = 0;
        }
        sink.progress(cursor.offset + buf.len() as u64, cursor.size);
        if cursor.offset + buf.len() as u64 >= cursor.size {
            break Ok(());
        }
    };
    flush(file, &mut buf, cursor).await.map_err(io)?;
    if result.is_ok() && cursor.offset < cursor.size && !cancel.is_cancelled() {
        return Err(http(format!(
            "the response ended at byte {} of {}",
            cursor.offset, cursor.size
        )));
    }
    result
}

async fn flush(
    file: &mut tokio::fs::File,
    buf: &mut Vec<u8>,
    cursor: &mut FetchCursor,
) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    file.write_all(buf).await?;
    cursor.hash.update(buf);
    cursor.offset += buf.len() as u64;
    buf.clear();
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `bytes a-b/total` → (a, total).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, _) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, total.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 10)));
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
