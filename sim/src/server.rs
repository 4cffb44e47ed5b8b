//! `Sim::start`: binds the listener, creates the initial cluster state (namespaces, nodes, the
//! Kueue CRDs), wires store, API, control endpoints, controllers, faults and data plane, serves
//! HTTP/1.1 on loopback, and writes kubeconfigs. The [`SimHandle`] shuts everything down on
//! drop. Each request goes to the control endpoints ([`crate::control`]) when its path names
//! one, else to the Kubernetes API ([`crate::api`]).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::resources::{crd_established_status, kueue_crds, Registry};
use crate::api::{self, App, Body};
use crate::config::SimConfig;
use crate::control;
use crate::dataplane::DataPlane;
use crate::faults::Faults;
use crate::store::{self, keys, Store};

/// Errors starting the sim or writing its kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the initial cluster state: {0}")]
    Init(#[from] store::Error),
}

/// Namespaces that exist at start (`kueue-system`: Kueue is installed).
pub const INITIAL_NAMESPACES: [&str; 5] = [
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "kueue-system",
];

pub struct Sim;

/// A running sim. Dropping it (or `shutdown().await`) stops the server and the controllers.
pub struct SimHandle {
    addr: SocketAddr,
    app: Arc<App>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    data_dir: PathBuf,
    temp_data_dir: bool,
}

impl Sim {
    /// Starts a sim in this process (on `config.listen`, by default a free loopback port).
    pub async fn start(config: SimConfig) -> Result<SimHandle, Error> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let (data_dir, temp_data_dir) = match &config.data_dir {
            Some(d) => (d.clone(), false),
            None => {
                let suffix: u64 = rand::random();
                (
                    std::env::temp_dir()
                        .join(format!("vast-sim-{}-{suffix:016x}", std::process::id())),
                    true,
                )
            }
        };
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let store = Arc::new(Store::new(config.watch_history));
        let registry = Arc::new(Registry::new());
        let faults = Arc::new(Faults::new(config.faults.clone()));
        let dataplane = Arc::new(DataPlane::new(data_dir.clone(), faults.clone()));
        dataplane.set_default_result_bytes(config.pods.result_bytes);
        dataplane
            .set_service_resolver(crate::controllers::resolve::service_resolver(store.clone()));
        init_cluster(&store, &registry, &config, addr)?;
        let cancel = CancellationToken::new();
        let app = Arc::new(App {
            store: store.clone(),
            registry,
            faults: faults.clone(),
            dataplane: dataplane.clone(),
            addr,
            shutdown: cancel.clone(),
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(serve(listener, app.clone(), cancel.clone())));
        if config.controllers {
            tasks.push(tokio::spawn(crate::controllers::run(
                store,
                dataplane,
                faults,
                config.clone(),
                cancel.clone(),
            )));
        }
        tracing::info!(%addr, data_dir = %data_dir.display(), "vast-sim listening");
        Ok(SimHandle {
            addr,
            app,
            cancel,
            tasks,
            data_dir,
            temp_data_dir,
        })
    }
}

fn init_cluster(
    store: &Store,
    registry: &Registry,
    config: &SimConfig,
    addr: SocketAddr,
) -> Result<(), Error> {
    let ns_key: Arc<str> = Arc::from(keys::NAMESPACES);
    for ns in INITIAL_NAMESPACES {
        let obj = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        });
        store.create(&ns_key, obj)?;
    }
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    });
    store.create(&Arc::from(keys::SERVICES), svc)?;
    let ep = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": addr.ip().to_string()}], "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}],
    });
    store.create(&Arc::from(keys::ENDPOINTS), ep)?;
    crate::controllers::create_nodes(store, config)?;
    let crd_key: Arc<str> = Arc::from(keys::CRDS);
    let now = store::now_rfc3339();
    for mut crd in kueue_crds() {
        registry.register_crd(&crd);
        crd["status"] = crd_established_status(&crd, &now);
        store.create(&crd_key, crd)?;
    }
    Ok(())
}

async fn serve(listener: TcpListener, app: Arc<App>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move {
                    // a bug in a handler answers 500 instead of dropping the connection
                    match AssertUnwindSafe(handle(app, req)).catch_unwind().await {
                        Ok(r) => r,
                        Err(_) => Ok(api::ApiError::new(
                            500,
                            "InternalError",
                            "internal error in vast-sim (handler panicked)",
                        )
                        .response()),
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended");
                    }
                }
            }
        });
    }
}

/// One request: a control endpoint (`/sim/...`) or the Kubernetes API.
async fn handle(
    app: Arc<App>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, api::Reset> {
    match control::route(req.uri().path()) {
        Some(route) => Ok(control::handle(&app, route, req).await),
        None => api::handle(app, req).await,
    }
}

/// A kubeconfig whose context `vast-sim` points at `server`.
pub fn kubeconfig_yaml(server: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: vast-sim\n  cluster:\n    server: {server}\ncontexts:\n- name: vast-sim\n  context:\n    cluster: vast-sim\n    user: vast-sim\n    namespace: {namespace}\ncurrent-context: vast-sim\nusers:\n- name: vast-sim\n  user: {{}}\npreferences: {{}}\n"
    )
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, usable as `kube::Config::new(url.parse()?)`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.app.store
    }

    /// The data plane (direct access to pod endpoints, e.g. `endpoint(ns, pod, 9000)`).
    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.app.dataplane
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.app.faults
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Writes a kubeconfig (context `vast-sim`, namespace `default`).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Kubeconfig {
                path: path.into(),
                source,
            })?;
        }
        std::fs::write(path, kubeconfig_yaml(&self.url(), "default")).map_err(|source| {
            Error::Kubeconfig {
                path: path.into(),
                source,
            }
        })
    }

    /// Stops the server and controllers and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        for t in &self.tasks {
            t.abort();
        }
        if self.temp_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
