//! Data plane of the simulated pods.
//!
//! INTERFACE CONTRACT (fixed; the body is owned by the data-plane work):
//! the controllers call `pod_started` / `pod_restarted` / `pod_deleted` and
//! `write_scenario_results`; the API router hands websocket upgrade requests for
//! `.../pods/{name}/portforward` and `.../pods/{name}/exec` to `handle_portforward` /
//! `handle_exec` together with the resolved pod.
//!
//! Layout on disk (under `root`): `pods/<ns>/<pod>/volumes/<volume>/` for emptyDir, configMap
//! and secret volumes, `pvcs/<ns>/<claim>/` for PVC-backed volumes (kept across pod restarts
//! and deletion), `pods/<ns>/<pod>/rootfs/<container>/` as the working directory of exec'd
//! processes. Every `mountPath` of a container maps to its volume directory (plus `subPath`).
//! See `sim/docs/dataplane.md`.

mod exec;
mod http;
mod isolate;
mod portforward;
mod s3;
mod spdy;
mod ws;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::pod::{PodOutcome, ResolvedContainer, ResolvedMount, ResolvedPod, ResolvedVolume};

/// Errors of the data plane (rendered by the API layer as a `Status` 500).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    fn io(what: impl std::fmt::Display, path: &Path, e: std::io::Error) -> Self {
        Error::Other(format!("{what} {}: {e}", path.display()))
    }
}

/// Resolves a host name used inside the cluster (`robovast`, `robovast.default.svc`, a pod
/// name) in a namespace to the name of the pod that serves it, by looking up Services and
/// their selectors in the object store. Set by the server at start.
pub type ServiceResolver = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// Annotation on a scenario pod: size in bytes of its `logs/system.log` result file.
pub const RESULT_BYTES_ANNOTATION: &str = "sim.vast.dev/result-bytes";
/// Default size of `logs/system.log` when the annotation is absent.
pub const DEFAULT_RESULT_BYTES: u64 = 4096;
/// Files the `s3-init` init container of a vast scenario pod copies from its bucket's root; a
/// scenario pod whose bucket lacks one fails in its init container.
pub const SCENARIO_INPUT_FILES: [&str; 4] = [
    "entrypoint.sh",
    "secondary_entrypoint.sh",
    "collect_sysinfo.py",
    "scenario.osc",
];
/// Port of the MinIO container that becomes an S3 endpoint.
pub const S3_PORT: u16 = 9000;
/// Port of the container that becomes an HTTP file server.
pub const HTTP_PORT: u16 = 80;

/// Access keys of one S3 endpoint; never printed.
#[derive(Clone, PartialEq)]
struct Keys {
    access: String,
    secret: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// A served container port.
#[derive(Debug, Clone)]
enum Endpoint {
    S3 {
        addr: SocketAddr,
        root: PathBuf,
        keys: Keys,
    },
    Http {
        addr: SocketAddr,
        root: PathBuf,
    },
}

impl Endpoint {
    fn addr(&self) -> SocketAddr {
        match self {
            Endpoint::S3 { addr, .. } | Endpoint::Http { addr, .. } => *addr,
        }
    }
}

struct PodEntry {
    pod: ResolvedPod,
    endpoints: BTreeMap<u16, Endpoint>,
    stop: CancellationToken,
}

/// Per-sim data plane: owns one directory per pod volume under `root` and the S3 / HTTP
/// endpoints of pods that expose port 9000 (MinIO) / 80 (HTTP file server).
pub struct DataPlane {
    pub root: PathBuf,
    pub faults: Arc<Faults>,
    pods: Mutex<HashMap<(String, String), PodEntry>>,
    resolver: RwLock<Option<ServiceResolver>>,
    result_bytes: AtomicU64,
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        let pods = self.pods.get_mut().unwrap_or_else(|e| e.into_inner());
        for entry in pods.values() {
            entry.stop.cancel();
        }
        // Processes exec started in any pod of this data plane do not outlive it.
        kill_matching(&format!("{EXEC_MARKER_VAR}={}|", self.root.display()), true);
    }
}

/// A single path component that is safe to join (object names, volume names, keys).
fn safe_component(kind: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(Error::Other(format!(
            "{kind} {s:?} is not a valid path component"
        )));
    }
    Ok(())
}

/// A relative path (subPath, S3 prefix) without `..` or absolute parts.
fn safe_relative(kind: &str, s: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for c in Path::new(s).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(Error::Other(format!(
                    "{kind} {s:?} must be a relative path without '..'"
                )))
            }
        }
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DataPlane {
    pub fn new(root: PathBuf, faults: Arc<Faults>) -> Self {
        DataPlane {
            root,
            faults,
            pods: Mutex::new(HashMap::new()),
            resolver: RwLock::new(None),
            result_bytes: AtomicU64::new(DEFAULT_RESULT_BYTES),
        }
    }

    /// Called once by the server after construction: (namespace, host) -> pod name.
    pub fn set_service_resolver(&self, resolver: ServiceResolver) {
        *self.resolver.write().unwrap_or_else(|e| e.into_inner()) = Some(resolver);
    }

    /// Default size of a scenario's `logs/system.log` (overridden per pod by the
    /// `sim.vast.dev/result-bytes` annotation).
    pub fn set_default_result_bytes(&self, bytes: u64) {
        self.result_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The local address serving `port` of a running pod (S3 on 9000, HTTP on 80): the
    /// "direct" endpoint, bypassing port-forward.
    pub fn endpoint(&self, namespace: &str, pod: &str, port: u16) -> Option<SocketAddr> {
        let pods = lock(&self.pods);
        pods.get(&(namespace.to_string(), pod.to_string()))?
            .endpoints
            .get(&port)
            .map(Endpoint::addr)
    }

    /// Body bytes served by the HTTP file servers (port 80) of every pod of every sim in this
    /// process so far.
    pub fn http_bytes_sent() -> u64 {
        http::BYTES_SENT.load(Ordering::Relaxed)
    }

    /// Host directory of a volume of `pod`.
    pub fn volume_dir(&self, pod: &ResolvedPod, volume: &ResolvedVolume) -> Result<PathBuf, Error> {
        safe_component("namespace", &pod.namespace)?;
        safe_component("pod name", &pod.name)?;
        safe_component("volume name", volume.name())?;
        Ok(match volume {
            ResolvedVolume::Persistent { claim, .. } => {
                safe_component("claim name", claim)?;
                self.root.join("pvcs").join(&pod.namespace).join(claim)
            }
            _ => self
                .pod_dir(&pod.namespace, &pod.name)
                .join("volumes")
                .join(volume.name()),
        })
    }

    /// Value of `VAST_SIM_POD` for exec'd processes: unique per data plane (its root) and pod.
    fn exec_marker(&self, namespace: &str, name: &str) -> String {
        format!("{}|{namespace}/{name}", self.root.display())
    }

    fn pod_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join("pods").join(namespace).join(name)
    }

    /// Host directory a container mount maps to (volume dir plus `subPath`).
    pub fn mount_dir(&self, pod: &ResolvedPod, mount: &ResolvedMount) -> Result<PathBuf, Error> {
        let volume = pod
            .volumes
            .iter()
            .find(|v| v.name() == mount.volume)
            .ok_or_else(|| {
                Error::Other(format!(
                    "pod {}/{}: mount {} refers to volume {:?}, which the pod does not define",
                    pod.namespace, pod.name, mount.mount_path, mount.volume
                ))
            })?;
        let mut dir = self.volume_dir(pod, volume)?;
        if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            dir.push(safe_relative("subPath", sub)?);
        }
        Ok(dir)
    }

    /// (mountPath, host dir) of a container, longest mountPath first.
    fn mount_map(
        &self,
        pod: &ResolvedPod,
        c: &ResolvedContainer,
    ) -> Result<Vec<(String, PathBuf)>, Error> {
        let mut map = Vec::new();
        for m in &c.mounts {
            let mp = m.mount_path.trim_end_matches('/');
            if mp.is_empty() {
                continue;
            }
            map.push((mp.to_string(), self.mount_dir(pod, m)?));
        }
        map.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        Ok(map)
    }

    /// Create volume dirs, write configMap and secret files, create subPath dirs.
    async fn prepare_dirs(&self, pod: &ResolvedPod, wipe_pod_volumes: bool) -> Result<(), Error> {
        for v in &pod.volumes {
            let dir = self.volume_dir(pod, v)?;
            let pod_scoped = !matches!(v, ResolvedVolume::Persistent { .. });
            if wipe_pod_volumes && pod_scoped && dir.exists() {
                tokio::fs::remove_dir_all(&dir)
                    .await
                    .map_err(|e| Error::io("wiping", &dir, e))?;
            }
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| Error::io("creating", &dir, e))?;
            if let ResolvedVolume::ConfigMap { files, .. } | ResolvedVolume::Secret { files, .. } =
                v
            {
                for (name, content) in files {
                    safe_component("configMap/secret key", name)?;
                    let path = dir.join(name);
                    // Unchanged files are left alone, changed ones replaced atomically: a
                    // script running from the volume never sees a half-written file.
                    if tokio::fs::read(&path).await.ok().as_deref() == Some(content.as_slice()) {
                        continue;
                    }
                    // A name of its own: concurrent execs refresh the same volume.
                    static TMP_SEQ: AtomicU64 = AtomicU64::new(0);
                    let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
                    let tmp = dir.join(format!("..{name}.vast-sim-tmp-{seq}"));
                    tokio::fs::write(&tmp, content)
                        .await
                        .map_err(|e| Error::io("writing", &tmp, e))?;
                    tokio::fs::rename(&tmp, &path)
                        .await
                        .map_err(|e| Error::io("writing", &path, e))?;
                }
            }
        }
        for c in pod.init_containers.iter().chain(&pod.containers) {
            for m in &c.mounts {
                let dir = self.mount_dir(pod, m)?;
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| Error::io("creating", &dir, e))?;
            }
            safe_component("container name", &c.name)?;
            let rootfs = self
                .pod_dir(&pod.namespace, &pod.name)
                .join("rootfs")
                .join(&c.name);
            tokio::fs::create_dir_all(&rootfs)
                .await
                .map_err(|e| Error::io("creating", &rootfs, e))?;
        }
        Ok(())
    }

    /// Map a container path to the host: through the longest matching mount, else into the
    /// container's private rootfs dir.
    fn host_path(
        &self,
        pod: &ResolvedPod,
        c: &ResolvedContainer,
        path: &str,
    ) -> Result<PathBuf, Error> {
        let map = self.mount_map(pod, c)?;
        if let Some(mapped) = rewrite_prefix(&map, path) {
            return Ok(PathBuf::from(mapped));
        }
        let rel = safe_relative("path", path.trim_start_matches('/'))?;
        Ok(self
            .pod_dir(&pod.namespace, &pod.name)
            .join("rootfs")
            .join(&c.name)
            .join(rel))
    }

    async fn start_endpoints(
        &self,
        pod: &ResolvedPod,
        stop: &CancellationToken,
    ) -> Result<BTreeMap<u16, Endpoint>, Error> {
        let mut endpoints = BTreeMap::new();
        for c in &pod.containers {
            if c.ports.contains(&S3_PORT) && !endpoints.contains_key(&S3_PORT) {
                let data = minio_data_path(c);
                let root = self.host_path(pod, c, &data)?;
                let keys = Keys {
                    access: c
                        .env
                        .get("MINIO_ROOT_USER")
                        .cloned()
                        .unwrap_or_else(|| "minioadmin".into()),
                    secret: c
                        .env
                        .get("MINIO_ROOT_PASSWORD")
                        .cloned()
                        .unwrap_or_else(|| "minioadmin".into()),
                };
                let ep = s3::start(
                    root,
                    &keys.access,
                    &keys.secret,
                    self.faults.clone(),
                    stop.clone(),
                )
                .await
                .map_err(|e| {
                    Error::Other(format!(
                        "pod {}/{} container {}: {e}",
                        pod.namespace, pod.name, c.name
                    ))
                })?;
                endpoints.insert(
                    S3_PORT,
                    Endpoint::S3 {
                        addr: ep.addr,
                        root: ep.root,
                        keys,
                    },
                );
            }
            if c.ports.contains(&HTTP_PORT) && !endpoints.contains_key(&HTTP_PORT) {
                let mount = c
                    .mounts
                    .iter()
                    .find(|m| m.mount_path.trim_end_matches('/') == "/usr/share/nginx/html")
                    .or_else(|| c.mounts.first());
                let root = match mount {
                    Some(m) => self.mount_dir(pod, m)?,
                    None => self.host_path(pod, c, "/usr/share/nginx/html")?,
                };
                let addr = http::start(root.clone(), stop.clone())
                    .await
                    .map_err(|e| Error::io("starting the HTTP file server of", &root, e))?;
                endpoints.insert(HTTP_PORT, Endpoint::Http { addr, root });
            }
        }
        Ok(endpoints)
    }

    /// A pod became Running: create its volume dirs, materialise configMap/secret volumes,
    /// start endpoints for its container ports.
    pub async fn pod_started(&self, pod: &ResolvedPod) -> Result<(), Error> {
        self.prepare_dirs(pod, false).await?;
        let key = (pod.namespace.clone(), pod.name.clone());
        {
            let mut pods = lock(&self.pods);
            if let Some(entry) = pods.get_mut(&key) {
                if entry.pod.uid == pod.uid {
                    entry.pod = pod.clone();
                    return Ok(());
                }
                // Same name, new pod: the old one's endpoints go.
                entry.stop.cancel();
                pods.remove(&key);
            }
        }
        let stop = CancellationToken::new();
        let endpoints = match self.start_endpoints(pod, &stop).await {
            Ok(e) => e,
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        };
        let mut pods = lock(&self.pods);
        if let Some(old) = pods.insert(
            key,
            PodEntry {
                pod: pod.clone(),
                endpoints,
                stop,
            },
        ) {
            old.stop.cancel();
        }
        Ok(())
    }

    /// The pod's containers restarted; `wipe_empty_dirs` as emptyDir semantics demand.
    /// Processes started by exec are killed; endpoints keep their addresses.
    pub async fn pod_restarted(
        &self,
        pod: &ResolvedPod,
        wipe_empty_dirs: bool,
    ) -> Result<(), Error> {
        kill_exec_processes(&self.exec_marker(&pod.namespace, &pod.name));
        self.prepare_dirs(pod, wipe_empty_dirs).await?;
        let roots: Vec<PathBuf> = {
            let pods = lock(&self.pods);
            match pods.get(&(pod.namespace.clone(), pod.name.clone())) {
                Some(e) => e
                    .endpoints
                    .values()
                    .map(|ep| match ep {
                        Endpoint::S3 { root, .. } | Endpoint::Http { root, .. } => root.clone(),
                    })
                    .collect(),
                None => Vec::new(),
            }
        };
        if roots.is_empty() {
            return self.pod_started(pod).await;
        }
        for r in roots {
            tokio::fs::create_dir_all(&r)
                .await
                .map_err(|e| Error::io("creating", &r, e))?;
        }
        Ok(())
    }

    /// The pod was deleted: stop its endpoints, remove its volume dirs.
    pub async fn pod_deleted(&self, namespace: &str, name: &str) -> Result<(), Error> {
        let entry = lock(&self.pods).remove(&(namespace.to_string(), name.to_string()));
        if let Some(e) = entry {
            e.stop.cancel();
        }
        kill_exec_processes(&self.exec_marker(namespace, name));
        safe_component("namespace", namespace)?;
        safe_component("pod name", name)?;
        let dir = self.pod_dir(namespace, name);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &dir, e)),
        }
    }

    /// A PVC was deleted: remove its data.
    pub async fn pvc_deleted(&self, namespace: &str, claim: &str) -> Result<(), Error> {
        safe_component("namespace", namespace)?;
        safe_component("claim name", claim)?;
        let dir = self.root.join("pvcs").join(namespace).join(claim);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &dir, e)),
        }
    }

    /// Find the S3 endpoint an in-cluster URL (`http://robovast:9000`) names, from pod
    /// `namespace`/`from_pod`.
    fn resolve_s3(&self, namespace: &str, from_pod: &str, url_str: &str) -> Option<Endpoint> {
        let url = url::Url::parse(url_str).ok()?;
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default().unwrap_or(S3_PORT);
        let target = if host == "localhost" || host == "127.0.0.1" {
            Some(from_pod.to_string())
        } else {
            let resolver = self
                .resolver
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            resolver.and_then(|r| r(namespace, &host)).or_else(|| {
                // A bare pod name, or `<service>.<ns>...` with the service named like its pod.
                let first = host.split('.').next().unwrap_or(&host).to_string();
                Some(first)
            })
        }?;
        let pods = lock(&self.pods);
        let entry = pods.get(&(namespace.to_string(), target))?;
        match entry.endpoints.get(&port) {
            Some(ep @ Endpoint::S3 { .. }) => Some(ep.clone()),
            _ => entry
                .endpoints
                .values()
                .find(|e| matches!(e, Endpoint::S3 { .. }))
                .cloned(),
        }
    }

    /// The scenario container of `pod` (the one whose env has `S3_BUCKET`), the data root of
    /// the S3 endpoint its `S3_ENDPOINT` leads to and its bucket's directory there. Errors
    /// (unreachable endpoint, rejected credentials, missing bucket) read as the `mc` client
    /// would report them, without the credentials.
    fn scenario_bucket<'p>(
        &self,
        pod: &'p ResolvedPod,
    ) -> Result<(&'p ResolvedContainer, PathBuf, PathBuf), Error> {
        let who = format!("pod {}/{}", pod.namespace, pod.name);
        let main = pod
            .containers
            .iter()
            .find(|c| c.env.contains_key("S3_BUCKET"))
            .ok_or_else(|| Error::Other(format!("{who}: no container has S3_BUCKET in its env")))?;
        let env = |k: &str| main.env.get(k).cloned().unwrap_or_default();
        let bucket = env("S3_BUCKET");
        safe_component("S3_BUCKET", &bucket)?;
        let endpoint_url = env("S3_ENDPOINT");
        let Some(Endpoint::S3 { root, keys, .. }) =
            self.resolve_s3(&pod.namespace, &pod.name, &endpoint_url)
        else {
            return Err(Error::Other(format!(
                "{who}: S3_ENDPOINT {endpoint_url:?} does not lead to a running S3 endpoint in namespace {}",
                pod.namespace
            )));
        };
        if env("S3_ACCESS_KEY") != keys.access || env("S3_SECRET_KEY") != keys.secret {
            return Err(Error::Other(format!(
                "{who}: S3 credentials in S3_ACCESS_KEY/S3_SECRET_KEY were rejected by {endpoint_url} (InvalidAccessKeyId)"
            )));
        }
        let bucket_dir = root.join(&bucket);
        if !bucket_dir.is_dir() {
            return Err(Error::Other(format!(
                "{who}: bucket {bucket:?} does not exist at {endpoint_url} (NoSuchBucket)"
            )));
        }
        Ok((main, root, bucket_dir))
    }

    /// Whether `pod` is a scenario pod as vast renders them: a container whose env has both
    /// `S3_BUCKET` and `S3_ENDPOINT`.
    pub fn is_scenario_pod(pod: &ResolvedPod) -> bool {
        pod.containers
            .iter()
            .any(|c| c.env.contains_key("S3_BUCKET") && c.env.contains_key("S3_ENDPOINT"))
    }

    /// What the `s3-init` container vast renders does before the scenario starts: reach the
    /// S3 of `S3_ENDPOINT` and copy [`SCENARIO_INPUT_FILES`] from the root of `S3_BUCKET`.
    /// The error is the message the real init container would print before exiting 1.
    pub fn check_scenario_inputs(&self, pod: &ResolvedPod) -> Result<(), Error> {
        let (main, _, bucket_dir) = self.scenario_bucket(pod)?;
        let bucket = main.env.get("S3_BUCKET").cloned().unwrap_or_default();
        for file in SCENARIO_INPUT_FILES {
            if !bucket_dir.join(file).is_file() {
                return Err(Error::Other(format!(
                    "pod {}/{}: required file s3://{bucket}/{file} is missing or unreadable",
                    pod.namespace, pod.name
                )));
            }
        }
        Ok(())
    }

    /// A simulated scenario pod finished: write result files under `<bucket>/<prefix>/` of the
    /// in-cluster S3 (bucket `S3_BUCKET`, prefix `S3_PREFIX` from the main container's env).
    pub async fn write_scenario_results(
        &self,
        pod: &ResolvedPod,
        outcome: PodOutcome,
    ) -> Result<(), Error> {
        let (main, root, bucket_dir) = self.scenario_bucket(pod)?;
        let env = |k: &str| main.env.get(k).cloned().unwrap_or_default();
        let prefix = safe_relative("S3_PREFIX", env("S3_PREFIX").trim_matches('/'))?;
        let size = pod
            .annotations
            .get(RESULT_BYTES_ANNOTATION)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| self.result_bytes.load(Ordering::Relaxed));
        let test_id = main
            .env
            .get("TEST_ID")
            .cloned()
            .unwrap_or_else(|| prefix.display().to_string().replace('/', "-"));
        let mut files: Vec<(String, Vec<u8>)> = vec![
            ("logs/system.log".into(), log_bytes(&pod.name, size)),
            ("sysinfo.yaml".into(), sysinfo(pod, main).into_bytes()),
            ("test.xml".into(), junit(&test_id, outcome).into_bytes()),
        ];
        for c in pod.containers.iter().filter(|c| c.name != main.name) {
            files.push((
                format!("logs/system_{}.log", c.name),
                log_bytes(&c.name, size / 4),
            ));
        }
        let dest_dir = bucket_dir.join(&prefix);
        for (i, (rel, content)) in files.into_iter().enumerate() {
            let dest = dest_dir.join(&rel);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| Error::io("creating", parent, e))?;
            }
            // Write beside the buckets, then rename: a reader never sees a partial object.
            let tmp = root.join(format!(
                ".vast-sim.tmp.{}.{}.{i}",
                pod.uid,
                std::process::id()
            ));
            tokio::fs::write(&tmp, &content)
                .await
                .map_err(|e| Error::io("writing", &tmp, e))?;
            tokio::fs::rename(&tmp, &dest)
                .await
                .map_err(|e| Error::io("renaming into", &dest, e))?;
        }
        Ok(())
    }

    /// Where each of the pod's ports is served.
    fn endpoint_addrs(&self, pod: &ResolvedPod) -> std::collections::HashMap<u16, SocketAddr> {
        self.lookup(pod)
            .iter()
            .map(|(p, e)| (*p, e.addr()))
            .collect()
    }

    fn lookup(&self, pod: &ResolvedPod) -> BTreeMap<u16, Endpoint> {
        let pods = lock(&self.pods);
        pods.get(&(pod.namespace.clone(), pod.name.clone()))
            .map(|e| e.endpoints.clone())
            .unwrap_or_default()
    }

    /// Port-forward over a websocket (`v4.channel.k8s.io`), SPDY (`portforward.k8s.io`) or SPDY
    /// tunnelled in a websocket (`SPDY/3.1+portforward.k8s.io`), or a `Status` error response.
    pub async fn handle_portforward(
        &self,
        pod: &ResolvedPod,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let desc = format!("{}_{}", pod.name, pod.namespace);
        if spdy::is_upgrade(&req) {
            // kubectl's SPDY (≤ 1.29, or websockets turned off): ports come with the streams.
            let (resp, _) = match spdy::accept(&req, &[spdy::PORTFORWARD]) {
                Ok(x) => x,
                Err(resp) => return *resp,
            };
            let endpoints = self.endpoint_addrs(pod);
            let faults = self.faults.clone();
            tokio::spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(up) => {
                        let session = spdy::serve(spdy::Transport::Raw(up));
                        portforward::run_spdy(session, endpoints, faults, desc).await
                    }
                    Err(e) => tracing::warn!(error = %e, "port-forward upgrade failed"),
                }
            });
            return resp;
        }
        let (resp, proto) = match ws::accept(&req, &[ws::V4, ws::V5, spdy::WS_PORTFORWARD]) {
            Ok(x) => x,
            Err(resp) => return *resp,
        };
        if proto == spdy::WS_PORTFORWARD {
            // kubectl ≥ 1.30: SPDY frames inside websocket messages.
            let endpoints = self.endpoint_addrs(pod);
            let faults = self.faults.clone();
            tokio::spawn(async move {
                match ws::upgrade(req).await {
                    Ok(ws) => {
                        let session = spdy::serve(spdy::Transport::Websocket(Box::new(ws)));
                        portforward::run_spdy(session, endpoints, faults, desc).await
                    }
                    Err(e) => tracing::warn!(error = %e, "port-forward upgrade failed"),
                }
            });
            return resp;
        }
        let mut ports: Vec<u16> = Vec::new();
        for (k, v) in ws::query_pairs(&req) {
            if k != "ports" {
                continue;
            }
            for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match p.parse::<u16>() {
                    Ok(n) if n > 0 => {
                        if !ports.contains(&n) {
                            ports.push(n);
                        }
                    }
                    _ => {
                        return ws::status(
                            400,
                            "BadRequest",
                            &format!("invalid port {p:?} in query parameter ports"),
                        )
                    }
                }
            }
        }
        if ports.is_empty() {
            return ws::status(
                400,
                "BadRequest",
                "at least one port must be specified (query parameter ports)",
            );
        }
        if ports.len() > 128 {
            return ws::status(
                400,
                "BadRequest",
                "at most 128 ports may be forwarded at once",
            );
        }
        let endpoints = self.lookup(pod);
        let targets = ports
            .into_iter()
            .map(|port| portforward::Target {
                port,
                addr: endpoints.get(&port).map(Endpoint::addr),
            })
            .collect();
        let faults = self.faults.clone();
        tokio::spawn(async move {
            match ws::upgrade(req).await {
                Ok(ws) => portforward::run(ws, targets, faults, desc).await,
                Err(e) => tracing::warn!(error = %e, "port-forward upgrade failed"),
            }
        });
        resp
    }

    /// Exec over a websocket (`v5.channel.k8s.io` preferred, `v4` accepted) or SPDY (`v4` …
    /// `channel.k8s.io`), or a `Status` error.
    pub async fn handle_exec(
        &self,
        pod: &ResolvedPod,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let over_spdy = spdy::is_upgrade(&req);
        let accepted = if over_spdy {
            spdy::accept(&req, spdy::EXEC)
        } else {
            ws::accept(&req, &[ws::V5, ws::V4])
        };
        let (resp, _proto) = match accepted {
            Ok(x) => x,
            Err(resp) => return *resp,
        };
        let mut tty = false;
        let mut argv = Vec::new();
        let mut container = None;
        let (mut stdin, mut stdout, mut stderr) = (false, true, true);
        let flag = |v: &str| crate::selector::parse_bool(v).unwrap_or(false);
        for (k, v) in ws::query_pairs(&req) {
            match k.as_str() {
                "command" => argv.push(v),
                "container" => container = Some(v),
                "stdin" => stdin = flag(&v),
                "stdout" => stdout = flag(&v),
                "stderr" => stderr = flag(&v),
                "tty" => tty = flag(&v),
                _ => {}
            }
        }
        if argv.is_empty() {
            return ws::status(400, "BadRequest", "you must specify at least 1 command");
        }
        let c = match &container {
            Some(name) => pod.containers.iter().find(|c| &c.name == name),
            None => pod.containers.first(),
        };
        let Some(c) = c else {
            let name = container.unwrap_or_default();
            return ws::status(
                400,
                "BadRequest",
                &format!("container {name} is not valid for pod {}", pod.name),
            );
        };
        let spec = match self.exec_spec(pod, c, argv, (stdin, stdout, stderr)).await {
            Ok(s) => s,
            Err(e) => {
                return ws::status(
                    500,
                    "InternalError",
                    &format!("preparing exec in pod {}/{}: {e}", pod.namespace, pod.name),
                )
            }
        };
        tokio::spawn(async move {
            if over_spdy {
                match hyper::upgrade::on(req).await {
                    Ok(up) => {
                        exec::run_spdy(spdy::serve(spdy::Transport::Raw(up)), spec, tty).await
                    }
                    Err(e) => tracing::warn!(error = %e, "exec upgrade failed"),
                }
                return;
            }
            match ws::upgrade(req).await {
                Ok(ws) => exec::run(ws, spec).await,
                Err(e) => tracing::warn!(error = %e, "exec upgrade failed"),
            }
        });
        resp
    }

    async fn exec_spec(
        &self,
        pod: &ResolvedPod,
        c: &ResolvedContainer,
        argv: Vec<String>,
        (stdin, stdout, stderr): (bool, bool, bool),
    ) -> Result<exec::ExecSpec, Error> {
        self.prepare_dirs(pod, false).await?;
        let map = self.mount_map(pod, c)?;
        let endpoints = self.lookup(pod);
        let mut ports: Vec<(u16, SocketAddr)> =
            endpoints.iter().map(|(p, e)| (*p, e.addr())).collect();
        // A pod without its own S3 reaches the one S3_ENDPOINT names.
        let own_s3 = endpoints.get(&S3_PORT).map(Endpoint::addr);
        let s3_addr = own_s3.or_else(|| {
            c.env
                .get("S3_ENDPOINT")
                .and_then(|u| self.resolve_s3(&pod.namespace, &pod.name, u))
                .map(|e| e.addr())
        });
        if own_s3.is_none() {
            if let Some(a) = s3_addr {
                ports.push((S3_PORT, a));
            }
        }
        let rootfs = self
            .pod_dir(&pod.namespace, &pod.name)
            .join("rootfs")
            .join(&c.name);
        // The pod's own filesystem view where the machine allows a mount namespace; else the
        // command line's mount paths are rewritten to the host's directories.
        let isolation = if isolate::available() {
            let tmp = self.pod_dir(&pod.namespace, &pod.name).join("tmp");
            let bin = self.pod_dir(&pod.namespace, &pod.name).join("bin");
            let mut mounts = Vec::new();
            for m in &c.mounts {
                let mp = m.mount_path.trim_end_matches('/');
                if !mp.is_empty() {
                    mounts.push((mp.to_string(), self.mount_dir(pod, m)?, m.read_only));
                }
            }
            match isolate::plan(&rootfs, &tmp, &bin, &mounts) {
                Some(iso) => {
                    let prepared = iso.clone();
                    tokio::task::spawn_blocking(move || {
                        std::fs::create_dir_all(&tmp)?;
                        isolate::prepare(&prepared)
                    })
                    .await
                    .map_err(|e| Error::Other(format!("preparing the exec root: {e}")))?
                    .map_err(|e| Error::io("preparing the exec root", &rootfs, e))?;
                    Some(iso)
                }
                None => None,
            }
        } else {
            None
        };
        let isolated = isolation.is_some();
        let rewrite = |s: &str| {
            if isolated {
                rewrite_localhost(&ports, s)
            } else {
                rewrite_localhost(&ports, &rewrite_paths(&map, s))
            }
        };
        let mut argv: Vec<String> = argv.iter().map(|a| rewrite(a)).collect();
        if argv.first().map(String::as_str) == Some("python") {
            argv[0] = "python3".into();
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        if isolated {
            env.insert(
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
            env.insert("HOME".into(), "/root".into());
            if let Ok(v) = std::env::var("LANG") {
                env.insert("LANG".into(), v);
            }
        } else {
            for k in ["PATH", "HOME", "LANG", "USER", "TMPDIR"] {
                if let Ok(v) = std::env::var(k) {
                    env.insert(k.into(), v);
                }
            }
        }
        for (k, v) in &c.env {
            if k != "PATH" {
                env.insert(k.clone(), rewrite(v));
            }
        }
        env.insert("HOSTNAME".into(), pod.name.clone());
        if let Some(a) = s3_addr {
            env.insert("S3_ENDPOINT".into(), format!("http://{a}"));
        }
        env.insert(
            EXEC_MARKER_VAR.into(),
            self.exec_marker(&pod.namespace, &pod.name),
        );
        Ok(exec::ExecSpec {
            argv,
            env: env.into_iter().collect(),
            cwd: rootfs,
            isolation,
            stdin,
            stdout,
            stderr,
        })
    }
}

/// Env var set on every exec'd process, so the processes of a pod can be found and killed.
/// Whether exec'd processes see the pod's own filesystem (a private mount namespace) on this
/// machine; otherwise mount paths in their command lines are rewritten to the host's.
pub fn exec_isolated() -> bool {
    isolate::available()
}

pub const EXEC_MARKER_VAR: &str = "VAST_SIM_POD";

/// Kill (SIGKILL) every process of ours whose environment carries `VAST_SIM_POD=<marker>`,
/// i.e. everything exec started in that pod, including detached children.
fn kill_exec_processes(marker: &str) {
    kill_matching(&format!("{EXEC_MARKER_VAR}={marker}"), false);
}

/// Kill every process whose environment has an entry equal to `needle` (or starting with it,
/// when `prefix`).
///
/// One scan of `/proc` can miss a process that is being forked or exec'd at that moment (its
/// `environ` reads empty while the exec swaps its memory), so scans repeat, a few milliseconds
/// apart, until one finds nothing left to kill (at most 10).
fn kill_matching(needle: &str, prefix: bool) {
    for pass in 0..10 {
        if pass > 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if kill_matching_once(needle, prefix) == 0 && pass > 0 {
            return;
        }
    }
}

/// One scan of `/proc`; returns how many processes were signalled.
fn kill_matching_once(needle: &str, prefix: bool) -> usize {
    let mut killed = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return killed;
    };
    let me = std::process::id();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let hit = |kv: &[u8]| {
            if prefix {
                kv.starts_with(needle.as_bytes())
            } else {
                kv == needle.as_bytes()
            }
        };
        if environ.split(|b| *b == 0).any(hit) {
            // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

/// The data directory a MinIO container serves: the first absolute path after `server` in its
/// command and args (`minio server /data --console-address :9001`), default `/data`.
fn minio_data_path(c: &ResolvedContainer) -> String {
    let argv: Vec<&String> = c.command.iter().chain(&c.args).collect();
    argv.iter()
        .position(|a| a.as_str() == "server")
        .and_then(|i| argv[i + 1..].iter().find(|a| a.starts_with('/')))
        .map(|s| s.to_string())
        .unwrap_or_else(|| "/data".into())
}

/// If `path` is a mountPath or below one, the host path.
fn rewrite_prefix(map: &[(String, PathBuf)], path: &str) -> Option<String> {
    for (mp, host) in map {
        if path == mp {
            return Some(host.display().to_string());
        }
        if let Some(rest) = path.strip_prefix(mp.as_str()) {
            if rest.starts_with('/') {
                return Some(format!("{}{rest}", host.display()));
            }
        }
    }
    None
}

/// Rewrite every occurrence of a mountPath in `s` that starts a path: at the start of `s` or
/// after whitespace, a quote, `=`, `:`, `(`, `;`, `|`, `&`, `<`, `>` or a backtick, and that
/// ends at the end of `s`, a `/`, or one of those delimiters. So `/data/x`, `sh -c "ls /data/*"`
/// and `PYTHONPATH=/config:/data` are mapped, `http://host:9000/data` is not.
pub(crate) fn rewrite_paths(map: &[(String, PathBuf)], s: &str) -> String {
    const DELIMS: &[char] = &[
        ' ', '\t', '\n', '"', '\'', '=', ':', '(', ')', ';', '|', '&', '<', '>', '`', ',',
    ];
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'outer: while i < s.len() {
        let at_start = i == 0
            || s[..i]
                .chars()
                .next_back()
                .is_some_and(|c| DELIMS.contains(&c));
        if at_start && s[i..].starts_with('/') {
            for (mp, host) in map {
                if let Some(rest) = s[i..].strip_prefix(mp.as_str()) {
                    let ends = rest.is_empty() || rest.starts_with('/') || rest.starts_with(DELIMS);
                    if ends {
                        out.push_str(&host.display().to_string());
                        i += mp.len();
                        continue 'outer;
                    }
                }
            }
        }
        let Some(ch) = s[i..].chars().next() else {
            break;
        };
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Point `localhost:<port>` / `127.0.0.1:<port>` of the pod's served ports at their listeners.
pub(crate) fn rewrite_localhost(ports: &[(u16, SocketAddr)], s: &str) -> String {
    let mut out = s.to_string();
    for (port, addr) in ports {
        for host in ["localhost", "127.0.0.1"] {
            let pat = format!("{host}:{port}");
            let mut result = String::with_capacity(out.len());
            let mut rest = out.as_str();
            while let Some(pos) = rest.find(&pat) {
                let after = &rest[pos + pat.len()..];
                result.push_str(&rest[..pos]);
                if after.starts_with(|c: char| c.is_ascii_digit()) {
                    result.push_str(&pat);
                } else {
                    result.push_str(&addr.to_string());
                }
                rest = after;
            }
            result.push_str(rest);
            out = result;
        }
    }
    out
}

/// Deterministic text log content of `size` bytes.
fn log_bytes(seed: &str, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut n: u64 = 0;
    while (out.len() as u64) < size {
        let line = format!(
            "[INFO] [{}.{:03}] [{seed}]: simulated scenario step {n}\n",
            1_700_000_000 + n / 10,
            n % 1000
        );
        out.extend_from_slice(line.as_bytes());
        n += 1;
    }
    out.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    out
}

fn sysinfo(pod: &ResolvedPod, c: &ResolvedContainer) -> String {
    format!(
        "# simulated by vast-sim\nhostname: {}\nimage: {}\navailable_cpus: {}\navailable_mem: {}\nkernel: vast-sim\n",
        pod.name,
        c.image,
        c.env.get("AVAILABLE_CPUS").map(String::as_str).unwrap_or("unknown"),
        c.env.get("AVAILABLE_MEM").map(String::as_str).unwrap_or("unknown"),
    )
}

fn junit(test_id: &str, outcome: PodOutcome) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;")
    };
    let (failures, body) = match outcome {
        PodOutcome::Succeeded => (0, String::new()),
        PodOutcome::Failed => (
            1,
            "<failure message=\"scenario failed (simulated)\"/>".to_string(),
        ),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<testsuite name=\"scenario_execution\" tests=\"1\" failures=\"{failures}\" errors=\"0\">\n  <testcase classname=\"tests.scenario\" name=\"{}\" time=\"1.0\">{body}</testcase>\n</testsuite>\n",
        esc(test_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Vec<(String, PathBuf)> {
        let mut m = vec![
            ("/data".to_string(), PathBuf::from("/h/vol/data")),
            ("/config".to_string(), PathBuf::from("/h/vol/config")),
            ("/data/sub".to_string(), PathBuf::from("/h/other")),
        ];
        m.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        m
    }

    #[test]
    fn paths_are_rewritten_only_at_path_starts() {
        let m = map();
        assert_eq!(
            rewrite_paths(&m, "/data/run.tar.gz"),
            "/h/vol/data/run.tar.gz"
        );
        assert_eq!(rewrite_paths(&m, "/data"), "/h/vol/data");
        assert_eq!(rewrite_paths(&m, "/data/sub/x"), "/h/other/x");
        assert_eq!(rewrite_paths(&m, "/database"), "/database");
        assert_eq!(
            rewrite_paths(&m, "ls /data/*.tar.gz 2>/dev/null || true"),
            "ls /h/vol/data/*.tar.gz 2>/dev/null || true"
        );
        assert_eq!(
            rewrite_paths(&m, "A=/config:/data"),
            "A=/h/vol/config:/h/vol/data"
        );
        assert_eq!(
            rewrite_paths(&m, "http://robovast:9000/data"),
            "http://robovast:9000/data"
        );
        assert_eq!(rewrite_paths(&m, "x/data"), "x/data");
        assert_eq!(rewrite_prefix(&m, "/data/a"), Some("/h/vol/data/a".into()));
        assert_eq!(rewrite_prefix(&m, "/datax"), None);
    }

    #[test]
    fn localhost_ports_are_rewritten() {
        let addr: SocketAddr = "127.0.0.1:40123".parse().expect("addr");
        let p = [(9000u16, addr)];
        assert_eq!(
            rewrite_localhost(&p, "http://localhost:9000"),
            "http://127.0.0.1:40123"
        );
        assert_eq!(
            rewrite_localhost(&p, "http://127.0.0.1:9000/x"),
            "http://127.0.0.1:40123/x"
        );
        assert_eq!(rewrite_localhost(&p, "localhost:90001"), "localhost:90001");
    }

    #[test]
    fn minio_path_from_args() {
        let mut c = ResolvedContainer {
            name: "minio".into(),
            image: "minio/minio".into(),
            command: vec![],
            args: vec![
                "server".into(),
                "/data/minio".into(),
                "--console-address".into(),
                ":9001".into(),
            ],
            env: BTreeMap::new(),
            ports: vec![9000],
            mounts: vec![],
        };
        assert_eq!(minio_data_path(&c), "/data/minio");
        c.args.clear();
        assert_eq!(minio_data_path(&c), "/data");
    }

    #[test]
    fn unsafe_names_are_rejected() {
        assert!(safe_component("x", "..").is_err());
        assert!(safe_component("x", "a/b").is_err());
        assert!(safe_relative("subPath", "../x").is_err());
        assert!(safe_relative("subPath", "/abs").is_err());
        assert_eq!(
            safe_relative("subPath", "a/./b").ok(),
            Some(PathBuf::from("a/b"))
        );
    }

    #[test]
    fn result_files_content() {
        assert_eq!(log_bytes("p", 1000).len(), 1000);
        assert!(junit("t-0", PodOutcome::Failed).contains("failures=\"1\""));
        assert!(junit("t-0", PodOutcome::Succeeded).contains("failures=\"0\""));
    }
}
