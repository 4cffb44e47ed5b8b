//! `vast execution cluster upload-configs DIR` (the "only vast" path of the prepare-run
//! upload) end to end against the simulated cluster: the Secret and the robovast objects as a
//! user creates them, the real binary with `KUBECONFIG`, the bucket checked byte for byte
//! through the sim's direct S3 endpoint; a second run uploads nothing; no pod is a clear error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use vast::manifests::cluster_config;
use vast::manifests::kueue::Quota;
use vast::manifests::prepare::{prepare_run, PrepareInput};
use vast::project::{generate, VastFile};
use vast_sim::config::SimConfig;
use vast_sim::server::{Sim, SimHandle};

const AK: &str = "upload-test-ak";
const SK: &str = "upload-test-secret-key-0123456789";
const NS: &str = "default";

fn kube_client(sim: &SimHandle) -> kube::Client {
    let mut config = kube::Config::new(sim.url().parse().unwrap());
    config.default_namespace = NS.into();
    kube::Client::try_from(config).unwrap()
}

/// `prepare-run` output for the growth_sim example into `dir/prepared`.
fn prepare(dir: &Path, run_id: &str) -> PathBuf {
    let vast = VastFile::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim/growth_sim.vast"),
    )
    .unwrap();
    let configs = generate(&vast).unwrap();
    let out = dir.join("prepared");
    let input = PrepareInput {
        vast: &vast,
        configs: &configs,
        runs: 2,
        cluster: cluster_config("minikube").unwrap(),
        options: BTreeMap::new(),
        namespace: NS.into(),
        context: None,
        log_tree: false,
        run_id: run_id.into(),
        quota: Quota {
            cpu: 8,
            memory_gi: 32,
        },
        created_at: "2026-01-02T03:04:05Z".into(),
    };
    prepare_run(&out, &input).unwrap();
    out
}

async fn create_secret(client: &kube::Client) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vast-s3-credentials"},
        "data": {
            "access-key": base64_encode(AK),
            "secret-key": base64_encode(SK),
        }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Creates the minikube config's objects (Pod, Service) as `kubectl apply -f
/// robovast-manifest.yaml` would, and waits for the pod to be Running.
async fn create_robovast(client: &kube::Client) {
    let objects = cluster_config("minikube")
        .unwrap()
        .render(&BTreeMap::new(), NS)
        .unwrap();
    for object in objects {
        let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                object["apiVersion"].as_str().unwrap().to_string(),
            ),
        };
        let kind = object["kind"].as_str().unwrap().to_string();
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, &kind));
        let obj: DynamicObject = serde_json::from_value(object).unwrap();
        Api::<DynamicObject>::namespaced_with(client.clone(), NS, &ar)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = pods.get("robovast").await.unwrap();
        if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "robovast pod not Running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the real binary off the async runtime.
async fn upload(kubeconfig: &Path, dir: &Path) -> std::process::Output {
    let kubeconfig = kubeconfig.to_path_buf();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vast"))
            .args(["execution", "cluster", "upload-configs"])
            .arg(&dir)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("VAST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{Credentials, Region};
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(AK, SK, None, None, "static"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Every file under `dir` as (key with `/`, bytes).
fn local_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap();
                let key: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_str().unwrap().to_string())
                    .collect();
                out.insert(key.join("/"), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Every object of `bucket` as (key, bytes).
async fn bucket_contents(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    while let Some(page) = pages.next().await {
        for o in page.unwrap().contents() {
            let key = o.key().unwrap().to_string();
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
                .to_vec();
            out.insert(key, body);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_configs_uploads_out_template_through_port_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let client = kube_client(&sim);
    let kubeconfig = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let run_id = "run-2026-01-02-030405-vu01";
    let dir = prepare(tmp.path(), run_id);
    create_secret(&client).await;
    create_robovast(&client).await;

    let o = upload(&kubeconfig, &dir).await;
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    let expected = local_files(&dir.join("out_template"));
    assert!(expected.len() >= 10, "{} files", expected.len());
    assert_eq!(
        stdout,
        format!(
            "Uploading config files to S3 bucket '{run_id}'...\nUpload complete. ({} files)\n",
            expected.len()
        )
    );
    assert!(
        !stdout.contains(SK) && !stderr.contains(SK) && !stderr.contains(AK),
        "credentials leaked: {stdout}{stderr}"
    );

    // The bucket holds exactly out_template, byte for byte.
    let direct = sim.dataplane().endpoint(NS, "robovast", 9000).unwrap();
    let s3 = s3_client(&format!("http://{direct}"));
    assert_eq!(bucket_contents(&s3, run_id).await, expected);

    // A second run (e.g. after an interruption) finds everything present and sends nothing:
    // an object overwritten behind its back with other content is the only one re-sent.
    let changed = expected.keys().next().unwrap().clone();
    s3.put_object()
        .bucket(run_id)
        .key(&changed)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"stale"))
        .send()
        .await
        .unwrap();
    let o = upload(&kubeconfig, &dir).await;
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.ends_with(&format!(
            "Upload complete. ({} files, {} already present)\n",
            expected.len(),
            expected.len() - 1
        )),
        "{stdout}"
    );
    assert_eq!(bucket_contents(&s3, run_id).await, expected);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_configs_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let client = kube_client(&sim);
    let kubeconfig = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let dir = prepare(tmp.path(), "run-2026-01-02-030405-vu02");

    // Not a prepared directory: usage error.
    let o = upload(&kubeconfig, tmp.path()).await;
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("is not a prepare-run output directory: out_template/ is missing"),
        "{stderr}"
    );

    // No Secret yet.
    let o = upload(&kubeconfig, &dir).await;
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("Secret 'vast-s3-credentials' not found in namespace 'default'"),
        "{stderr}"
    );

    // Secret but no robovast pod.
    create_secret(&client).await;
    let o = upload(&kubeconfig, &dir).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no pod 'robovast' in namespace 'default'"),
        "{stderr}"
    );
    assert!(!stderr.contains(SK), "{stderr}");

    // No Job manifests.
    for e in std::fs::read_dir(dir.join("jobs")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let o = upload(&kubeconfig, &dir).await;
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no Job manifests"), "{stderr}");
    sim.shutdown().await;
}

/// Port-forwards refused by the API server, a port-forward dropped mid-stream and S3 errors on
/// PUT are absorbed by the retries: the upload still completes, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_configs_survives_port_forward_and_s3_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let client = kube_client(&sim);
    let kubeconfig = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let run_id = "run-2026-01-02-030405-vu03";
    let dir = prepare(tmp.path(), run_id);
    create_secret(&client).await;
    create_robovast(&client).await;
    sim.faults().set(
        serde_json::from_value(serde_json::json!({
            "seed": 7,
            "api": [{"verbs": ["portforward"], "max_hits": 2, "action": {"status": {"codes": [500]}}}],
            "portforward": {"drop_after_bytes": 3000, "ports": [9000], "max_hits": 1},
            "s3": [{"ops": ["PutObject"], "max_hits": 2, "codes": [503]}]
        }))
        .unwrap(),
    );
    let o = upload(&kubeconfig, &dir).await;
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    // Every fault fired (its budget is spent).
    assert!(sim.faults().api_fault("portforward", "pods").is_none());
    assert!(sim.faults().portforward_budget(9000).is_none());
    assert!(sim.faults().s3_fault("PutObject").is_none());
    sim.faults().set(Default::default());
    let direct = sim.dataplane().endpoint(NS, "robovast", 9000).unwrap();
    let s3 = s3_client(&format!("http://{direct}"));
    assert_eq!(
        bucket_contents(&s3, run_id).await,
        local_files(&dir.join("out_template"))
    );
    sim.shutdown().await;
}
