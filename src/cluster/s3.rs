//! The in-cluster S3 (MinIO): credentials from the `vast-s3-credentials` Secret, an aws-sdk-s3
//! client for a plain-http endpoint (path style, `us-east-1`, static keys, no aws-config), and
//! the idempotent upload of a directory into a bucket.
//!
//! The upload skips objects already present with the same size and ETag (the MD5 of a single
//! PUT, or the multipart ETag computed locally for large files), so re-running it after an
//! interruption only sends what is missing. Files of [`MULTIPART_THRESHOLD`] bytes or more go
//! up as multipart uploads whose UploadId and finished parts are kept in an [`UploadCursor`],
//! so an interrupted large file continues at its next part.

use std::path::{Path, PathBuf};

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use md5::{Digest, Md5};

use crate::manifests::cluster_config::S3_SECRET;

/// Attempts of one S3 request whose connection broke before any answer (see
/// [`TransportFailuresOnly`]); answers of the server are not retried by the client.
const TRANSPORT_ATTEMPTS: u32 = 4;
/// Transient failures of single files after which a directory upload stops (the endpoint
/// is probably down); fewer are reported once the other files are done.
pub const MAX_TRANSIENT_FAILURES: usize = 8;
/// Files uploaded at the same time (each on its own pooled connection).
pub const PARALLEL: usize = 32;
/// Files this large or larger are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Size of every part but the last.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;

/// The resumable state of a directory upload: for each large file in progress its multipart
/// UploadId and the parts already sent (part number, ETag). Saved by the caller (a step's
/// cursor) whenever it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadCursor {
    #[serde(default)]
    pub multipart: std::collections::BTreeMap<String, MultipartState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MultipartState {
    pub upload_id: String,
    /// The file's size and multipart ETag when the upload started (a changed file starts
    /// over instead of mixing old and new parts).
    pub size: u64,
    #[serde(default)]
    pub etag: String,
    pub parts: Vec<(i32, String)>,
}

/// Where an upload reports its cursor (called with the lock held, so keep it short).
pub type CursorSink<'a> = &'a (dyn Fn(&UploadCursor) + Send + Sync);

/// S3 access keys. `Debug` never shows them.
#[derive(Clone)]
pub struct S3Credentials {
    access_key: String,
    secret_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3Credentials(<redacted>)")
    }
}

impl S3Credentials {
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }
}

/// A problem reading the S3 credentials Secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("Secret '{S3_SECRET}' not found in namespace '{namespace}'; create it first (see README_<cluster config>.md of the prepared run)")]
    Missing { namespace: String },
    #[error("Secret '{S3_SECRET}' in namespace '{namespace}' has no usable key '{key}' (it must hold base64 of UTF-8 text)")]
    Key {
        namespace: String,
        key: &'static str,
    },
    #[error("cannot read Secret '{S3_SECRET}' in namespace '{namespace}': {source}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

impl CredentialsError {
    /// Whether retrying may help (an API failure), as opposed to a missing Secret or key.
    pub fn is_transient(&self) -> bool {
        matches!(self, CredentialsError::Api { .. })
    }
}

/// Reads `access-key` and `secret-key` of the Secret `vast-s3-credentials` in `namespace`.
pub async fn read_credentials(
    client: kube::Client,
    namespace: &str,
) -> Result<S3Credentials, CredentialsError> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let secret = secrets
        .get_opt(S3_SECRET)
        .await
        .map_err(|source| CredentialsError::Api {
            namespace: namespace.to_string(),
            source,
        })?
        .ok_or_else(|| CredentialsError::Missing {
            namespace: namespace.to_string(),
        })?;
    let value = |key: &'static str| -> Result<String, CredentialsError> {
        let err = || CredentialsError::Key {
            namespace: namespace.to_string(),
            key,
        };
        // `data` is base64 on the wire; k8s-openapi has already decoded it. `stringData` is
        // write-only on a real API server but kept by simple fakes, so accept it too.
        if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(bytes.0.clone())
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(err);
        }
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .filter(|s| !s.is_empty())
            .cloned()
            .ok_or_else(err)
    };
    Ok(S3Credentials::new(
        value("access-key")?,
        value("secret-key")?,
    ))
}

/// Why [`forwarded`] could not give a client.
#[derive(Debug, thiserror::Error)]
pub enum ForwardedError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Forward(#[from] super::portforward::PortForwardError),
}

impl ForwardedError {
    /// A missing Secret or key needs a person; the rest may pass.
    pub fn is_transient(&self) -> bool {
        match self {
            ForwardedError::Credentials(e) => e.is_transient(),
            ForwardedError::Forward(_) => true,
        }
    }
}

/// A client of the MinIO in `pod` (port 9000) with the keys of the Secret, through a fresh
/// port-forward supervisor that lives as long as the returned value.
pub async fn forwarded(
    kube: &kube::Client,
    namespace: &str,
    pod: &str,
) -> Result<(super::portforward::PortForward, aws_sdk_s3::Client), ForwardedError> {
    let creds = read_credentials(kube.clone(), namespace).await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(kube.clone(), namespace);
    let forward = super::portforward::PortForward::start(pods, pod, 9000).await?;
    let client = client(&forward.http_endpoint(), &creds);
    Ok((forward, client))
}

/// The S3 client's retry classification: a request that got an answer from the server is
/// never retried by the SDK (whatever its status: the caller's retry layer owns server
/// errors); one whose connection failed before an answer (a dropped port-forward stream) is
/// left to the SDK's transient-error classifier, which retries it on a fresh connection.
#[derive(Debug)]
struct TransportFailuresOnly;

impl aws_sdk_s3::config::retry::ClassifyRetry for TransportFailuresOnly {
    fn classify_retry(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::InterceptorContext,
    ) -> aws_sdk_s3::config::retry::RetryAction {
        use aws_sdk_s3::config::retry::RetryAction;
        match ctx.output_or_error() {
            Some(Err(_)) if ctx.response().is_some() => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "vast: transport failures only"
    }
}

/// An aws-sdk-s3 client for a plain-http endpoint such as a port-forward
/// (`http://127.0.0.1:<port>`): path style, region `us-east-1`, static keys; retries only a
/// request whose connection broke before the server answered ([`TransportFailuresOnly`]).
pub fn client(endpoint: &str, credentials: &S3Credentials) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            credentials.access_key.clone(),
            credentials.secret_key.clone(),
            None,
            None,
            "vast-s3-credentials",
        ))
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard()
                .with_max_attempts(TRANSPORT_ATTEMPTS),
        )
        .retry_classifier(TransportFailuresOnly)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A problem uploading to S3.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("creating bucket '{bucket}' failed: {message}")]
    CreateBucket {
        bucket: String,
        message: String,
        permanent: bool,
    },
    #[error("uploading {key} to bucket '{bucket}' failed: {message}")]
    Upload {
        bucket: String,
        key: String,
        message: String,
        /// The server's error code says retrying cannot help (wrong keys, denied, ...).
        permanent: bool,
    },
    #[error("uploaded {key} to bucket '{bucket}' but the server stored different content (ETag {got}, expected MD5 {want})")]
    Mismatch {
        bucket: String,
        key: String,
        got: String,
        want: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("file name {} is not valid UTF-8, so it cannot be an S3 key", .0.display())]
    KeyName(PathBuf),
    /// Any other request (listing, download, removal).
    #[error("{what} failed: {message}")]
    Request {
        what: String,
        message: String,
        permanent: bool,
    },
}

impl S3Error {
    /// Whether retrying later may help: a failed S3 request unless the server's error code
    /// says otherwise (the endpoint may come back), a local I/O error as
    /// [`classify_io`](crate::results::io::classify_io) says; content mismatches and
    /// unusable file names need a person.
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::CreateBucket { permanent, .. }
            | S3Error::Upload { permanent, .. }
            | S3Error::Request { permanent, .. } => !permanent,
            S3Error::Io { source, .. } => crate::results::io::is_transient_io(source),
            S3Error::Mismatch { .. } | S3Error::KeyName(_) => false,
        }
    }
}

/// S3 error codes that retrying cannot fix (credentials, permissions, invalid requests).
pub fn permanent_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AllAccessDisabled"
                | "AccountProblem"
                | "InvalidBucketName"
                | "EntityTooLarge"
                | "InvalidArgument"
                | "MethodNotAllowed"
        )
    )
}

/// Creates `bucket`; a bucket that already exists (made by an earlier run with the same keys)
/// is fine.
pub async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), S3Error> {
    match s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.code(),
                Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(S3Error::CreateBucket {
            bucket: bucket.to_string(),
            permanent: permanent_code(e.code()),
            message: DisplayErrorContext(&e).to_string(),
        }),
    }
}

fn request_err(
    what: impl Into<String>,
    e: impl std::error::Error + ProvideErrorMetadata,
) -> S3Error {
    S3Error::Request {
        what: what.into(),
        permanent: permanent_code(e.code()),
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Writes one small object (replacing it).
pub async fn put_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), S3Error> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| request_err(format!("writing s3://{bucket}/{key}"), e))
}

/// The buckets whose name starts with `prefix`, sorted.
pub async fn list_buckets(s3: &aws_sdk_s3::Client, prefix: &str) -> Result<Vec<String>, S3Error> {
    let out = s3
        .list_buckets()
        .send()
        .await
        .map_err(|e| request_err("listing buckets", e))?;
    let mut names: Vec<String> = out
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(String::from))
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// Every object of `bucket` (ListObjectsV2, paginated), in key order.
pub async fn list_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> Result<Vec<ObjectInfo>, S3Error> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.clone())
            .send()
            .await
            .map_err(|e| request_err(format!("listing bucket '{bucket}'"), e))?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                out.push(ObjectInfo {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                });
            }
        }
        token = page.next_continuation_token().map(String::from);
        if token.is_none() || page.is_truncated() != Some(true) {
            break;
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Deletes every object of `bucket` (page by page) and then the bucket; a bucket that is
/// already gone is fine. Returns the number of objects removed.
pub async fn remove_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<u64, S3Error> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let mut removed = 0u64;
    loop {
        let page = match s3.list_objects_v2().bucket(bucket).send().await {
            Ok(p) => p,
            Err(e) if e.code() == Some("NoSuchBucket") => return Ok(removed),
            Err(e) => return Err(request_err(format!("listing bucket '{bucket}'"), e)),
        };
        let ids: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
            .collect();
        if ids.is_empty() {
            break;
        }
        let n = ids.len() as u64;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| S3Error::Request {
                what: format!("deleting objects of bucket '{bucket}'"),
                message: e.to_string(),
                permanent: true,
            })?;
        s3.delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| request_err(format!("deleting objects of bucket '{bucket}'"), e))?;
        removed += n;
    }
    match s3.delete_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(removed),
        Err(e) if e.code() == Some("NoSuchBucket") => Ok(removed),
        Err(e) => Err(request_err(format!("deleting bucket '{bucket}'"), e)),
    }
}

/// What [`upload_dir`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadSummary {
    /// Objects sent.
    pub uploaded: usize,
    /// Objects already present with the same size and content.
    pub skipped: usize,
}

impl UploadSummary {
    pub fn files(&self) -> usize {
        self.uploaded + self.skipped
    }
}

/// Every regular file under `dir`, sorted by key: (path, key relative to `dir` with `/`).
pub fn list_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, S3Error> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| S3Error::Io {
            action,
            path,
            source,
        }
    };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("list", &d))? {
            let path = entry.map_err(io("list", &d))?.path();
            // Follows symlinks, as reading the file does.
            let meta = std::fs::metadata(&path).map_err(io("inspect", &path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let rel = path
                    .strip_prefix(dir)
                    .map_err(|_| S3Error::KeyName(path.clone()))?;
                let mut parts = Vec::new();
                for c in rel.components() {
                    let s = c
                        .as_os_str()
                        .to_str()
                        .ok_or_else(|| S3Error::KeyName(path.clone()))?;
                    parts.push(s.to_string());
                }
                out.push((path, parts.join("/")));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Uploads every file under `dir` to `bucket` under its relative path, [`PARALLEL`] at a
/// time, skipping objects that already have the same size and MD5 ETag. The bucket must exist
/// ([`ensure_bucket`]). A permanent failure stops the upload at once; a transient one of a
/// file does not stop the others (unless [`MAX_TRANSIENT_FAILURES`] files failed) and is
/// returned once they are done. What was uploaded stays, so a re-run sends only what is
/// missing.
pub async fn upload_dir(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &Path,
) -> Result<UploadSummary, S3Error> {
    upload_dir_resumable(s3, bucket, dir, UploadCursor::default(), &|_| {}).await
}

/// [`upload_dir`] continuing from `cursor` (multipart uploads in progress), reporting every
/// change of it to `sink`.
pub async fn upload_dir_resumable(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &Path,
    cursor: UploadCursor,
    sink: CursorSink<'_>,
) -> Result<UploadSummary, S3Error> {
    use futures::StreamExt;
    let shared = std::sync::Mutex::new(cursor);
    let shared = &shared;
    let mut uploads = futures::stream::iter(list_files(dir)?)
        .map(|(path, key)| async move {
            let size = tokio::fs::metadata(&path)
                .await
                .map_err(|source| S3Error::Io {
                    action: "inspect",
                    path: path.clone(),
                    source,
                })?
                .len();
            if size >= MULTIPART_THRESHOLD {
                upload_large(s3, bucket, path, key, size, shared, sink).await
            } else {
                upload_file(s3, bucket, path, key).await
            }
        })
        .buffer_unordered(PARALLEL);
    let mut summary = UploadSummary::default();
    let mut failed: Vec<S3Error> = Vec::new();
    while let Some(sent) = uploads.next().await {
        match sent {
            Ok(true) => summary.uploaded += 1,
            Ok(false) => summary.skipped += 1,
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                tracing::debug!("{e} (the other files go on)");
                failed.push(e);
                if failed.len() >= MAX_TRANSIENT_FAILURES {
                    break;
                }
            }
        }
    }
    if failed.len() > 1 {
        tracing::warn!(
            "{} files were not uploaded to bucket '{bucket}' (a retry sends them)",
            failed.len()
        );
    }
    match failed.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(summary),
    }
}

/// Uploads one file unless already present; returns whether it was sent.
async fn upload_file(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    path: PathBuf,
    key: String,
) -> Result<bool, S3Error> {
    let body = tokio::fs::read(&path).await.map_err(|source| S3Error::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let md5 = hex::encode(Md5::digest(&body));
    if already_present(s3, bucket, &key, body.len(), &md5).await {
        tracing::debug!("{key}: already in bucket '{bucket}', skipped");
        return Ok(false);
    }
    let size = body.len();
    let out = s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| S3Error::Upload {
            bucket: bucket.to_string(),
            key: key.clone(),
            permanent: permanent_code(e.code()),
            message: DisplayErrorContext(&e).to_string(),
        })?;
    if let Some(got) = out.e_tag().map(unquote) {
        // A multipart ETag (`<md5>-<parts>`) is not a content MD5; single PUTs never give one.
        if !got.contains('-') && !got.eq_ignore_ascii_case(&md5) {
            return Err(S3Error::Mismatch {
                bucket: bucket.to_string(),
                key,
                got: got.to_string(),
                want: md5,
            });
        }
    }
    tracing::debug!("{key}: uploaded ({size} bytes)");
    Ok(true)
}

fn upload_err(
    bucket: &str,
    key: &str,
    e: impl std::error::Error + ProvideErrorMetadata,
) -> S3Error {
    S3Error::Upload {
        bucket: bucket.to_string(),
        key: key.to_string(),
        permanent: permanent_code(e.code()),
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Reads part `n` (1-based) of the file.
async fn read_part(path: &Path, n: i32, size: u64) -> Result<Vec<u8>, S3Error> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |source| S3Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let start = (n as u64 - 1) * PART_SIZE;
    let len = PART_SIZE.min(size - start);
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    f.seek(std::io::SeekFrom::Start(start)).await.map_err(io)?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).await.map_err(io)?;
    Ok(buf)
}

/// The ETag S3 gives a multipart upload of the file in [`PART_SIZE`] parts:
/// `md5(md5(part1) ‖ md5(part2) ‖ …)-<parts>`.
async fn multipart_etag(path: &Path, size: u64) -> Result<String, S3Error> {
    let parts = size.div_ceil(PART_SIZE) as i32;
    let mut all = Md5::new();
    for n in 1..=parts {
        all.update(Md5::digest(read_part(path, n, size).await?));
    }
    Ok(format!("{}-{parts}", hex::encode(all.finalize())))
}

/// Uploads a large file in parts, continuing a multipart upload recorded in the cursor.
async fn upload_large(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    path: PathBuf,
    key: String,
    size: u64,
    cursor: &std::sync::Mutex<UploadCursor>,
    sink: CursorSink<'_>,
) -> Result<bool, S3Error> {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let etag = multipart_etag(&path, size).await?;
    if let Ok(head) = s3.head_object().bucket(bucket).key(&key).send().await {
        if head.content_length() == i64::try_from(size).ok()
            && head.e_tag().map(unquote) == Some(etag.as_str())
        {
            forget(cursor, &key, sink);
            return Ok(false);
        }
    }
    let update = |f: &dyn Fn(&mut UploadCursor)| {
        if let Ok(mut c) = cursor.lock() {
            f(&mut c);
            sink(&c);
        }
    };
    let previous = cursor
        .lock()
        .ok()
        .and_then(|c| c.multipart.get(&key).cloned())
        .filter(|m| m.size == size && m.etag == etag);
    let mut state = match previous {
        Some(m) => m,
        None => {
            let out = s3
                .create_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| upload_err(bucket, &key, e))?;
            let upload_id = out.upload_id().unwrap_or_default().to_string();
            let m = MultipartState {
                upload_id,
                size,
                etag: etag.clone(),
                parts: Vec::new(),
            };
            update(&|c| {
                c.multipart.insert(key.clone(), m.clone());
            });
            m
        }
    };
    let parts = size.div_ceil(PART_SIZE) as i32;
    for n in 1..=parts {
        if state.parts.iter().any(|(p, _)| *p == n) {
            continue;
        }
        let body = read_part(&path, n, size).await?;
        let sent = s3
            .upload_part()
            .bucket(bucket)
            .key(&key)
            .upload_id(&state.upload_id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
            .await;
        let out = match sent {
            Ok(o) => o,
            Err(e) if e.code() == Some("NoSuchUpload") => {
                // The upload was aborted or expired: start the file over.
                forget(cursor, &key, sink);
                return Err(upload_err(bucket, &key, e));
            }
            Err(e) => return Err(upload_err(bucket, &key, e)),
        };
        state
            .parts
            .push((n, out.e_tag().unwrap_or_default().to_string()));
        let snapshot = state.clone();
        update(&|c| {
            c.multipart.insert(key.clone(), snapshot.clone());
        });
    }
    state.parts.sort();
    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(
            state
                .parts
                .iter()
                .map(|(n, e)| CompletedPart::builder().part_number(*n).e_tag(e).build())
                .collect(),
        ))
        .build();
    let done = s3
        .complete_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .upload_id(&state.upload_id)
        .multipart_upload(completed)
        .send()
        .await;
    match done {
        Ok(out) => {
            let got = out.e_tag().map(unquote).unwrap_or_default().to_string();
            forget(cursor, &key, sink);
            if !got.is_empty() && got != etag {
                return Err(S3Error::Mismatch {
                    bucket: bucket.to_string(),
                    key,
                    got,
                    want: etag,
                });
            }
        }
        Err(e) if matches!(e.code(), Some("NoSuchUpload") | Some("InvalidPart")) => {
            // The upload vanished (MinIO restarted on an emptyDir, or expired it): the next
            // attempt starts the file over.
            forget(cursor, &key, sink);
            return Err(upload_err(bucket, &key, e));
        }
        Err(e) => return Err(upload_err(bucket, &key, e)),
    }
    tracing::debug!("{key}: uploaded in {parts} parts ({size} bytes)");
    Ok(true)
}

fn forget(cursor: &std::sync::Mutex<UploadCursor>, key: &str, sink: CursorSink<'_>) {
    if let Ok(mut c) = cursor.lock() {
        if c.multipart.remove(key).is_some() {
            sink(&c);
        }
    }
}

fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// Whether `key` exists with `size` bytes and a single-part ETag equal to `md5`. Any failure
/// of the check counts as "not present": the upload then reports the real problem.
async fn already_present(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: usize,
    md5: &str,
) -> bool {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => {
            head.content_length() == i64::try_from(size).ok()
                && head
                    .e_tag()
                    .map(unquote)
                    .is_some_and(|e| e.eq_ignore_ascii_case(md5))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_relative_with_forward_slashes_and_sorted() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("z.txt"), "z").unwrap();
        std::fs::write(root.join("b/c/d.yaml"), "d").unwrap();
        std::fs::write(root.join("b/a"), "a").unwrap();
        let keys: Vec<String> = list_files(root).unwrap().into_iter().map(|f| f.1).collect();
        assert_eq!(keys, ["b/a", "b/c/d.yaml", "z.txt"]);
    }

    #[test]
    fn a_missing_directory_is_named() {
        let err = list_files(Path::new("/nonexistent/vast-dir")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vast-dir"), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let c = S3Credentials::new("the-access-key", "the-secret");
        let s = format!("{c:?}");
        assert!(
            !s.contains("the-secret") && !s.contains("the-access-key"),
            "{s}"
        );
    }
}
