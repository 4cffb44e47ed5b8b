//! Test support for the data plane: a minimal hyper API server that routes
//! `/api/v1/namespaces/{ns}/pods/{name}/{exec,portforward}` to a `DataPlane` with hand-built
//! `ResolvedPod`s, a kube-rs client for it, an S3 client, and a local port-forward proxy.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::net::TcpListener;
use vast_sim::dataplane::DataPlane;
use vast_sim::faults::{FaultConfig, Faults};
use vast_sim::pod::{ResolvedContainer, ResolvedMount, ResolvedPod, ResolvedVolume};

pub const NS: &str = "default";

pub struct Sim {
    pub dir: tempfile::TempDir,
    pub dp: Arc<DataPlane>,
    pub pods: Arc<Mutex<HashMap<String, ResolvedPod>>>,
    pub addr: SocketAddr,
    pub client: kube::Client,
}

impl Sim {
    pub async fn start() -> Sim {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Arc::new(Faults::new(FaultConfig::default()));
        let dp = Arc::new(DataPlane::new(dir.path().join("dp"), faults));
        let pods: Arc<Mutex<HashMap<String, ResolvedPod>>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (dp2, pods2) = (dp.clone(), pods.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (dp, pods) = (dp2.clone(), pods2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (dp, pods) = (dp.clone(), pods.clone());
                        async move { Ok::<_, Infallible>(route(&dp, &pods, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        Sim {
            dir,
            dp,
            pods,
            addr,
            client,
        }
    }

    pub fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn add(&self, pod: ResolvedPod) {
        self.dp.pod_started(&pod).await.expect("pod_started");
        self.pods
            .lock()
            .expect("lock")
            .insert(pod.name.clone(), pod);
    }

    pub fn s3_direct(&self, pod: &str) -> SocketAddr {
        self.dp.endpoint(NS, pod, 9000).expect("S3 endpoint")
    }
}

async fn route(
    dp: &DataPlane,
    pods: &Mutex<HashMap<String, ResolvedPod>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["api", "v1", "namespaces", NS, "pods", name, sub] = parts.as_slice() {
        let pod = pods.lock().expect("lock").get(*name).cloned();
        if let Some(pod) = pod {
            match *sub {
                "exec" => return dp.handle_exec(&pod, req).await,
                "portforward" => return dp.handle_portforward(&pod, req).await,
                _ => {}
            }
        }
    }
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}"#,
    )));
    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
    r
}

pub fn container(
    name: &str,
    ports: &[u16],
    mounts: &[(&str, &str, Option<&str>)],
    env: &[(&str, &str)],
) -> ResolvedContainer {
    ResolvedContainer {
        name: name.into(),
        image: format!("{name}:latest"),
        command: vec![],
        args: vec![],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ports: ports.to_vec(),
        mounts: mounts
            .iter()
            .map(|(vol, path, sub)| ResolvedMount {
                volume: vol.to_string(),
                mount_path: path.to_string(),
                sub_path: sub.map(str::to_string),
                read_only: false,
            })
            .collect(),
    }
}

/// The `robovast` pod as vast deploys it (rke2 flavour: emptyDir storage), plus a PVC volume
/// and a configMap volume for the archiver's scripts.
pub fn robovast_pod() -> ResolvedPod {
    let mut minio = container(
        "minio",
        &[9000, 9001],
        &[("storage", "/data", None)],
        &[
            ("MINIO_ROOT_USER", "minioadmin"),
            ("MINIO_ROOT_PASSWORD", "minioadmin"),
        ],
    );
    minio.args = vec![
        "server".into(),
        "/data".into(),
        "--console-address".into(),
        ":9001".into(),
    ];
    let http = container(
        "http-server",
        &[80],
        &[("storage", "/usr/share/nginx/html", None)],
        &[],
    );
    let archiver = container(
        "archiver",
        &[],
        &[
            ("storage", "/data", None),
            ("scripts", "/scripts", None),
            ("keep", "/keep", None),
        ],
        &[
            ("S3_ACCESS_KEY", "minioadmin"),
            ("S3_SECRET_KEY", "minioadmin"),
            ("WORK_DIR", "/data/work"),
        ],
    );
    ResolvedPod {
        namespace: NS.into(),
        name: "robovast".into(),
        uid: "uid-robovast".into(),
        labels: BTreeMap::from([("role".to_string(), "robovast".to_string())]),
        annotations: BTreeMap::new(),
        init_containers: vec![],
        containers: vec![minio, http, archiver],
        volumes: vec![
            ResolvedVolume::EmptyDir {
                name: "storage".into(),
            },
            ResolvedVolume::Persistent {
                name: "keep".into(),
                claim: "robovast-keep".into(),
            },
            ResolvedVolume::ConfigMap {
                name: "scripts".into(),
                files: BTreeMap::from([("hello.sh".to_string(), b"echo hello from $1\n".to_vec())]),
            },
        ],
    }
}

pub fn s3_client(endpoint: &str, secret: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{Credentials, Region};
    let http = aws_smithy_http_client::Builder::new().build_http();
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(http)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("minioadmin", secret, None, None, "static"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A local TCP port whose every connection is a fresh kube-rs port-forward to `pod:port`
/// (what vast's port-forward supervisor does).
pub async fn forward(api: Api<Pod>, pod: &str, port: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pod = pod.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (api, pod) = (api.clone(), pod.clone());
            tokio::spawn(async move {
                let Ok(mut pf) = api.portforward(&pod, &[port]).await else {
                    return;
                };
                let Some(mut stream) = pf.take_stream(port) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut stream).await;
                drop(stream);
                let _ = pf.join().await;
            });
        }
    });
    addr
}
