//! The S3 endpoint of a pod's MinIO container: s3s-fs behind SigV4, with MinIO's answers where
//! s3s-fs differs (409 `BucketNotEmpty` and `BucketAlreadyOwnedByYou`, `NoSuchBucket` for
//! object calls on missing buckets, conditional GETs: `If-Match`/`If-Unmodified-Since` 412,
//! `If-None-Match`/`If-Modified-Since` 304, `partNumber` GETs of multipart objects from the
//! part sizes recorded at completion) and seeded S3 faults.
//!
//! Why s3s-fs: it is Rust-native (no extra process, starts in microseconds, one per pod), checks
//! SigV4 for real, and passes multipart, ranged GET, ListObjectsV2 pagination and DeleteObjects
//! with aws-sdk-s3 and boto3 (see `shared/design/testinfra.md` §3). Objects are plain files
//! `<root>/<bucket>/<key>`, so a bucket is a directory under the MinIO data path, as the
//! archiver's host processes and the HTTP file server expect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use crate::faults::{Faults, S3Fault};

/// Errors starting an S3 endpoint.
#[derive(Debug, thiserror::Error)]
pub enum S3EndpointError {
    #[error("S3 data directory {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("S3 endpoint on {path}: {message}")]
    Backend { path: PathBuf, message: String },
    #[error("binding the S3 listener on 127.0.0.1: {0}")]
    Bind(std::io::Error),
}

/// s3s-fs with MinIO's error semantics where they differ.
struct MinioLike {
    fs: FileSystem,
    root: PathBuf,
}

impl MinioLike {
    fn bucket_exists(&self, bucket: &str) -> bool {
        // Bucket names are validated by s3s before they reach the trait (no `/`, no `..`).
        self.root.join(bucket).is_dir()
    }

    /// Where the part sizes of a completed multipart object are kept: a hidden file in the
    /// data root beside s3s-fs's own `.upload_id-*` files (not a bucket, not an object).
    fn parts_file(&self, bucket: &str, key: &str) -> PathBuf {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{bucket}/{key}").as_bytes());
        self.root
            .join(format!(".vast-sim-parts-{}", hex::encode(h)))
    }

    /// The part sizes recorded when the object was completed (checked by the caller against
    /// the object's length: a later PUT of the key makes them stale).
    fn part_sizes(&self, bucket: &str, key: &str) -> Option<Vec<u64>> {
        let bytes = std::fs::read(self.parts_file(bucket, key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.bucket_exists(bucket) {
            Ok(())
        } else {
            Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ))
        }
    }
}

/// The file of an object, when bucket and key are plain relative names (else `None`, and
/// s3s-fs's own body is kept).
fn object_path(root: &Path, bucket: &str, key: &str) -> Option<PathBuf> {
    let key_ok = Path::new(key)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (key_ok && !key.is_empty() && !bucket.contains('/')).then(|| root.join(bucket).join(key))
}

/// The first byte of a `Content-Range: bytes a-b/len` value.
fn range_start(content_range: &str) -> Option<u64> {
    content_range
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Seconds since the epoch (HTTP dates have second precision).
fn epoch_seconds(t: &Timestamp) -> Option<i64> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut buf).ok()?;
    let s = String::from_utf8(buf).ok()?;
    s.parse::<f64>().ok().map(|f| f.floor() as i64)
}

/// `If-Match`/`If-Unmodified-Since` (412) and `If-None-Match`/`If-Modified-Since` (304) of a
/// GET, as S3 and MinIO evaluate them: a matching `If-Match` overrides `If-Unmodified-Since`,
/// a non-matching `If-None-Match` overrides `If-Modified-Since`.
fn check_conditions(
    out: &GetObjectOutput,
    (if_match, if_none_match, if_modified_since, if_unmodified_since): (
        Option<IfMatch>,
        Option<IfNoneMatch>,
        Option<IfModifiedSince>,
        Option<IfUnmodifiedSince>,
    ),
) -> S3Result<()> {
    let etag_matches = |c: &ETagCondition| match (c, &out.e_tag) {
        (ETagCondition::Any, _) => true,
        (ETagCondition::ETag(want), Some(have)) => want.value() == have.value(),
        (ETagCondition::ETag(_), None) => false,
    };
    let modified = out.last_modified.as_ref().and_then(epoch_seconds);
    let since = |t: &Timestamp| epoch_seconds(t);
    match &if_match {
        Some(c) if !etag_matches(c) => {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ))
        }
        Some(_) => {}
        None => {
            if let (Some(m), Some(t)) = (modified, if_unmodified_since.as_ref().and_then(since)) {
                if m > t {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "At least one of the pre-conditions you specified did not hold"
                    ));
                }
            }
        }
    }
    match &if_none_match {
        Some(c) if etag_matches(c) => return Err(s3_error!(NotModified)),
        Some(_) => {}
        None => {
            if let (Some(m), Some(t)) = (modified, if_modified_since.as_ref().and_then(since)) {
                if m <= t {
                    return Err(s3_error!(NotModified));
                }
            }
        }
    }
    Ok(())
}

/// True when `dir` holds at least one regular file at any depth (empty directories left
/// behind by deleted `a/b` keys do not count, as in MinIO).
fn has_any_file(dir: &Path) -> std::io::Result<bool> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[async_trait::async_trait]
impl S3 for MinioLike {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        // one owner (the pod's credentials): re-creating a bucket is MinIO's 409
        if self.bucket_exists(&req.input.bucket) {
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            ));
        }
        self.fs.create_bucket(req).await
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket.clone();
        self.require_bucket(&bucket)?;
        let path = self.root.join(&bucket);
        match has_any_file(&path) {
            Ok(true) => {
                return Err(s3_error!(
                    BucketNotEmpty,
                    "The bucket you tried to delete is not empty"
                ))
            }
            Ok(false) => {}
            Err(e) => return Err(s3_error!(e, InternalError, "reading bucket {bucket}")),
        }
        self.fs.delete_bucket(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.require_bucket(&req.input.bucket)?;
        let path = object_path(&self.root, &req.input.bucket, &req.input.key);
        let mut req = req;
        // `partNumber=N`: the bytes of part N (as a range), with the part count
        let mut parts_count = None;
        if let Some(n) = req.input.part_number.take() {
            let len = path
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))?;
            let sizes = self
                .part_sizes(&req.input.bucket, &req.input.key)
                .filter(|s| s.iter().sum::<u64>() == len)
                .unwrap_or_else(|| vec![len]);
            let idx = usize::try_from(n)
                .ok()
                .filter(|i| (1..=sizes.len()).contains(i))
                .ok_or_else(|| {
                    let mut e = s3s::S3Error::with_message(
                        s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
                        "The requested partnumber is not satisfiable",
                    );
                    e.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
                    e
                })?;
            let first: u64 = sizes[..idx - 1].iter().sum();
            let size = sizes[idx - 1];
            if size > 0 {
                req.input.range = Some(Range::Int {
                    first,
                    last: Some(first + size - 1),
                });
            }
            parts_count = i32::try_from(sizes.len()).ok();
        }
        let conditions = (
            req.input.if_match.take(),
            req.input.if_none_match.take(),
            req.input.if_modified_since.take(),
            req.input.if_unmodified_since.take(),
        );
        let mut resp = self.fs.get_object(req).await?;
        check_conditions(&resp.output, conditions)?;
        if parts_count.is_some() {
            resp.output.parts_count = parts_count;
        }
        // s3s-fs streams the body in 4 KiB reads (one blocking-pool round trip each); serve
        // the same byte range in 1 MiB reads instead.
        if let Some(path) = path {
            let len = resp
                .output
                .content_length
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0);
            let start = resp
                .output
                .content_range
                .as_deref()
                .and_then(range_start)
                .unwrap_or(0);
            let mut file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| s3_error!(e, InternalError, "reopening the object"))?;
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| s3_error!(e, InternalError, "seeking in the object"))?;
            let stream = ReaderStream::with_capacity(file.take(len), 1 << 20);
            resp.output.body = Some(StreamingBlob::wrap(stream));
        }
        Ok(resp)
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.head_object(req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.put_object(req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.copy_object(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.delete_objects(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.create_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.upload_part(req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.upload_part_copy(req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.list_parts(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.require_bucket(&req.input.bucket)?;
        // the part sizes, for `partNumber` GETs (s3s-fs forgets them)
        let sizes: Option<Vec<u64>> = req
            .input
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.as_ref())
            .and_then(|parts| {
                parts
                    .iter()
                    .map(|p| {
                        let n = p.part_number.unwrap_or(0);
                        let f = self
                            .root
                            .join(format!(".upload_id-{}.part-{n}", req.input.upload_id));
                        std::fs::metadata(f).map(|m| m.len()).ok()
                    })
                    .collect::<Option<Vec<u64>>>()
            });
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let resp = self.fs.complete_multipart_upload(req).await?;
        if let Some(sizes) = sizes {
            if let Ok(json) = serde_json::to_vec(&sizes) {
                if let Err(e) = std::fs::write(self.parts_file(&bucket, &key), json) {
                    tracing::warn!(error = %e, "recording the part sizes of a multipart object");
                }
            }
        }
        Ok(resp)
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.abort_multipart_upload(req).await
    }
}

/// The name of the S3 operation of a path-style request, for fault matching.
pub(crate) fn classify(method: &hyper::Method, path: &str, query: &str) -> &'static str {
    let has = |k: &str| {
        query
            .split('&')
            .any(|kv| kv == k || kv.starts_with(&format!("{k}=")))
    };
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let bucket = parts.next().unwrap_or("");
    let key = parts.next().unwrap_or("");
    match (method.as_str(), bucket.is_empty(), key.is_empty()) {
        ("GET", true, _) => "ListBuckets",
        ("GET", false, true) if has("list-type") => "ListObjectsV2",
        ("GET", false, true) if has("location") => "GetBucketLocation",
        ("GET", false, true) if has("uploads") => "ListMultipartUploads",
        ("GET", false, true) => "ListObjects",
        ("HEAD", false, true) => "HeadBucket",
        ("PUT", false, true) => "CreateBucket",
        ("DELETE", false, true) => "DeleteBucket",
        ("POST", false, true) if has("delete") => "DeleteObjects",
        ("GET", false, false) if has("uploadId") => "ListParts",
        ("GET", false, false) => "GetObject",
        ("HEAD", false, false) => "HeadObject",
        ("PUT", false, false) if has("partNumber") => "UploadPart",
        ("PUT", false, false) => "PutObject",
        ("DELETE", false, false) if has("uploadId") => "AbortMultipartUpload",
        ("DELETE", false, false) => "DeleteObject",
        ("POST", false, false) if has("uploads") => "CreateMultipartUpload",
        ("POST", false, false) if has("uploadId") => "CompleteMultipartUpload",
        _ => "Unknown",
    }
}

/// `GET`/`HEAD` of `/minio/health/live|ready|cluster`: answered 200 without auth, as MinIO.
fn is_health_probe(req: &Request<Incoming>) -> bool {
    (req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD)
        && matches!(
            req.uri().path(),
            "/minio/health/live" | "/minio/health/ready" | "/minio/health/cluster"
        )
}

fn fault_response(status: u16, code: &str, path: &str) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected fault (vast-sim)</Message><Resource>{}</Resource><RequestId>vast-sim-fault</RequestId></Error>",
        xml_escape(path)
    );
    let mut resp = Response::new(s3s::Body::from(body));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    if status == 503 {
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    resp
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A running S3 endpoint.
pub(crate) struct S3Endpoint {
    pub addr: SocketAddr,
    pub root: PathBuf,
}

/// Start an S3 endpoint on `127.0.0.1:0` storing under `root` (created if missing), checking
/// SigV4 against `access_key`/`secret_key`; it stops when `stop` is cancelled.
pub(crate) async fn start(
    root: PathBuf,
    access_key: &str,
    secret_key: &str,
    faults: Arc<Faults>,
    stop: CancellationToken,
) -> Result<S3Endpoint, S3EndpointError> {
    tokio::fs::create_dir_all(&root)
        .await
        .map_err(|source| S3EndpointError::Root {
            path: root.clone(),
            source,
        })?;
    let fs = FileSystem::new(&root).map_err(|e| S3EndpointError::Backend {
        path: root.clone(),
        message: format!("{e:?}"),
    })?;
    let mut builder = S3ServiceBuilder::new(MinioLike {
        fs,
        root: root.clone(),
    });
    builder.set_auth(SimpleAuth::from_single(
        access_key.to_string(),
        secret_key.to_string(),
    ));
    let service: S3Service = builder.build();
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(S3EndpointError::Bind)?;
    let addr = listener.local_addr().map_err(S3EndpointError::Bind)?;
    tokio::spawn(accept_loop(listener, service, faults, stop));
    Ok(S3Endpoint { addr, root })
}

async fn accept_loop(
    listener: TcpListener,
    service: S3Service,
    faults: Arc<Faults>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "S3 endpoint accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let faults = faults.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let service = service.clone();
                let faults = faults.clone();
                async move {
                    if is_health_probe(&req) {
                        // MinIO's unauthenticated probes (readinessProbe, liveness checks).
                        return Ok::<_, Infallible>(Response::new(s3s::Body::empty()));
                    }
                    let op = classify(
                        req.method(),
                        req.uri().path(),
                        req.uri().query().unwrap_or(""),
                    );
                    match faults.s3_fault(op) {
                        Some(S3Fault::Error { status, code }) => {
                            return Ok::<_, Infallible>(fault_response(
                                status,
                                code,
                                req.uri().path(),
                            ));
                        }
                        Some(S3Fault::Latency(d)) => tokio::time::sleep(d).await,
                        None => {}
                    }
                    match hyper::service::Service::call(&service, req).await {
                        Ok(resp) => Ok(resp),
                        Err(e) => {
                            tracing::warn!(error = ?e, "S3 request failed");
                            Ok(fault_response(500, "InternalError", ""))
                        }
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    #[test]
    fn classifies_operations() {
        assert_eq!(classify(&Method::GET, "/", ""), "ListBuckets");
        assert_eq!(
            classify(&Method::GET, "/b", "list-type=2&max-keys=5"),
            "ListObjectsV2"
        );
        assert_eq!(classify(&Method::GET, "/b/k/x", ""), "GetObject");
        assert_eq!(
            classify(&Method::PUT, "/b/k", "partNumber=1&uploadId=u"),
            "UploadPart"
        );
        assert_eq!(
            classify(&Method::POST, "/b/k", "uploads"),
            "CreateMultipartUpload"
        );
        assert_eq!(
            classify(&Method::POST, "/b/k", "uploadId=u"),
            "CompleteMultipartUpload"
        );
        assert_eq!(classify(&Method::POST, "/b", "delete"), "DeleteObjects");
        assert_eq!(classify(&Method::DELETE, "/b", ""), "DeleteBucket");
    }

    #[test]
    fn fast_body_helpers() {
        assert_eq!(range_start("bytes 10-19/100"), Some(10));
        assert_eq!(range_start("bytes */100"), None);
        let root = Path::new("/r");
        assert_eq!(
            object_path(root, "b", "a/k"),
            Some(PathBuf::from("/r/b/a/k"))
        );
        assert_eq!(object_path(root, "b", "../k"), None);
        assert_eq!(object_path(root, "b", "/k"), None);
    }

    #[test]
    fn any_file_ignores_empty_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        assert!(!has_any_file(dir.path()).expect("walk"));
        std::fs::write(dir.path().join("a/b/c"), b"x").expect("write");
        assert!(has_any_file(dir.path()).expect("walk"));
    }
}
