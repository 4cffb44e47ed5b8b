//! The HTTP file server of a pod's port-80 container (nginx stand-in): GET and HEAD of the files
//! under one directory, with single `Range` requests (206, `Content-Range`, 416), `index.html`
//! for directories (403 without one, as nginx without autoindex), and no escape from the root.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, std::io::Error>;

/// Body bytes handed to connections by every HTTP file server of this process (tests measure
/// what a resumed download fetched again with it).
pub(crate) static BYTES_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Start serving `root` on `127.0.0.1:0` until `stop` is cancelled.
pub(crate) async fn start(root: PathBuf, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    tokio::fs::create_dir_all(&root).await?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP file server accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let root = root.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let root = root.clone();
                    async move { Ok::<_, Infallible>(serve(&root, &req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    Ok(addr)
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Percent-decode a URL path; `None` on invalid escapes or non-UTF-8 results.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Map a request path to a file under `root`; `None` if it would leave the root.
pub(crate) fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path)?;
    let mut out = root.to_path_buf();
    for comp in Path::new(&decoded).components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(c) => out.push(c),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// A parsed single byte range, already clamped to the file length.
#[derive(Debug, PartialEq)]
pub(crate) enum RangeSpec {
    /// No (usable) Range header: serve everything.
    Full,
    /// Serve `start..=end`.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

pub(crate) fn parse_range(header: Option<&str>, len: u64) -> RangeSpec {
    let Some(h) = header else {
        return RangeSpec::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full; // multiple ranges: answer the whole file (allowed by RFC 9110)
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeSpec::Full;
        };
        if n == 0 || len == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Part(len.saturating_sub(n), len - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::Full;
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    let end = if b.is_empty() {
        len - 1
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(len - 1),
            _ => return RangeSpec::Full,
        }
    };
    RangeSpec::Part(start, end)
}

async fn serve(root: &Path, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "405 Not Allowed");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(mut path) = resolve(root, req.uri().path()) else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request");
    };
    // Symlinks must not lead out of the root either.
    let (Ok(canon_root), Ok(canon)) = (
        tokio::fs::canonicalize(root).await,
        tokio::fs::canonicalize(&path).await,
    ) else {
        return text(StatusCode::NOT_FOUND, "404 Not Found");
    };
    if !canon.starts_with(&canon_root) {
        return text(StatusCode::NOT_FOUND, "404 Not Found");
    }
    if canon.is_dir() {
        path = canon.join("index.html");
        if !path.is_file() {
            return text(StatusCode::FORBIDDEN, "403 Forbidden");
        }
    } else {
        path = canon;
    }
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return text(StatusCode::FORBIDDEN, "403 Forbidden")
        }
        Err(_) => return text(StatusCode::NOT_FOUND, "404 Not Found"),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return text(StatusCode::NOT_FOUND, "404 Not Found"),
    };
    let range = req.headers().get(RANGE).and_then(|v| v.to_str().ok());
    let (status, start, count) = match parse_range(range, len) {
        RangeSpec::Full => (StatusCode::OK, 0, len),
        RangeSpec::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        RangeSpec::Unsatisfiable => {
            let mut r = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "416 Requested Range Not Satisfiable",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if req.method() == Method::HEAD {
        empty()
    } else {
        if start > 0 {
            if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
                tracing::warn!(error = %e, path = %path.display(), "seek failed");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error",
                );
            }
        }
        let stream = ReaderStream::with_capacity(file.take(count), 256 * 1024).map_ok(|b| {
            BYTES_SENT.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Frame::data(b)
        });
        BodyExt::boxed(StreamBody::new(stream))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
        {
            h.insert(CONTENT_RANGE, v);
        }
    }
    r
}

fn content_type(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".gz") {
        "application/gzip"
    } else if name.ends_with(".html") {
        "text/html"
    } else if name.ends_with(".txt") || name.ends_with(".log") {
        "text/plain"
    } else if name.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeSpec::Full);
        assert_eq!(parse_range(Some("bytes=2-4"), 10), RangeSpec::Part(2, 4));
        assert_eq!(parse_range(Some("bytes=2-"), 10), RangeSpec::Part(2, 9));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), RangeSpec::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeSpec::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), RangeSpec::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), RangeSpec::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeSpec::Full);
    }

    #[test]
    fn no_escape() {
        let root = Path::new("/srv/root");
        assert_eq!(
            resolve(root, "/a/b.txt"),
            Some(PathBuf::from("/srv/root/a/b.txt"))
        );
        assert_eq!(
            resolve(root, "/a%20b"),
            Some(PathBuf::from("/srv/root/a b"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/%2e%2e/%2e%2e/x"), None);
        assert_eq!(resolve(root, "/%zz"), None);
    }
}
