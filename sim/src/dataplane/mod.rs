//! Data plane of the simulated pods.
//!
//! INTERFACE CONTRACT (fixed; the body is owned by the data-plane work):
//! the controllers call `pod_started` / `pod_restarted` / `pod_deleted` and
//! `write_scenario_results`; the API router hands websocket upgrade requests for
//! `.../pods/{name}/portforward` and `.../pods/{name}/exec` to `handle_portforward` /
//! `handle_exec` together with the resolved pod.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::faults::Faults;
use crate::pod::{PodOutcome, ResolvedPod};

/// Errors of the data plane (rendered by the API layer as a `Status` 500).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Resolves a host name used inside the cluster (`robovast`, `robovast.default.svc`, a pod
/// name) in a namespace to the name of the pod that serves it, by looking up Services and
/// their selectors in the object store. Set by the server at start.
pub type ServiceResolver = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// Per-sim data plane: owns one directory per pod volume under `root` and the S3 / HTTP
/// endpoints of pods that expose port 9000 (MinIO) / 80 (HTTP file server).
pub struct DataPlane {
    pub root: PathBuf,
    pub faults: Arc<Faults>,
}

impl DataPlane {
    pub fn new(root: PathBuf, faults: Arc<Faults>) -> Self {
        DataPlane { root, faults }
    }

    /// Called once by the server after construction: (namespace, host) -> pod name.
    pub fn set_service_resolver(&self, _resolver: ServiceResolver) {}

    /// A pod became Running: create its volume dirs, materialise configMap/secret volumes,
    /// start endpoints for its container ports.
    pub async fn pod_started(&self, _pod: &ResolvedPod) -> Result<(), Error> {
        Ok(())
    }

    /// The pod's containers restarted; `wipe_empty_dirs` as emptyDir semantics demand.
    pub async fn pod_restarted(&self, _pod: &ResolvedPod, _wipe_empty_dirs: bool) -> Result<(), Error> {
        Ok(())
    }

    /// The pod was deleted: stop its endpoints, remove its volume dirs.
    pub async fn pod_deleted(&self, _namespace: &str, _name: &str) -> Result<(), Error> {
        Ok(())
    }

    /// A simulated scenario pod finished: write result files under `<bucket>/<prefix>/` of the
    /// in-cluster S3 (bucket `S3_BUCKET`, prefix `S3_PREFIX` from the main container's env).
    pub async fn write_scenario_results(&self, _pod: &ResolvedPod, _outcome: PodOutcome) -> Result<(), Error> {
        Ok(())
    }

    /// Websocket port-forward (`v4.channel.k8s.io`), or a `Status` error response.
    pub async fn handle_portforward(&self, _pod: &ResolvedPod, _req: Request<Incoming>) -> Response<Full<Bytes>> {
        not_implemented()
    }

    /// Websocket exec (`v5.channel.k8s.io` preferred, `v4` accepted), or a `Status` error.
    pub async fn handle_exec(&self, _pod: &ResolvedPod, _req: Request<Incoming>) -> Response<Full<Bytes>> {
        not_implemented()
    }
}

fn not_implemented() -> Response<Full<Bytes>> {
    let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"not implemented","reason":"MethodNotAllowed","code":405}"#;
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = hyper::StatusCode::METHOD_NOT_ALLOWED;
    resp
}
