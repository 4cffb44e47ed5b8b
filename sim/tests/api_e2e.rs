//! End to end through the sim's API server: API faults seen by clients, kube-rs port-forward
//! to the `robovast` pod's S3 port with aws-sdk-s3 on top, and exec with exit status. These
//! need the data plane and the fault module, which are merged from the data-plane work.

mod kube_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, AttachParams, ListParams, PostParams};
use kube_support::{eventually, raw, start};
use serde_json::json;
use tokio::io::AsyncReadExt;

async fn robovast_pod(client: &kube::Client) -> Api<Pod> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "robovast", "labels": {"role": "robovast"}},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "minio", "image": "minio/minio:latest", "args": ["server", "/data"],
                 "env": [{"name": "MINIO_ROOT_USER", "value": "minioadmin"}, {"name": "MINIO_ROOT_PASSWORD", "value": "minioadmin"}],
                 "ports": [{"name": "s3", "containerPort": 9000}], "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "archiver", "image": "archiver", "command": ["sleep", "infinity"], "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("robovast running", || async {
        (pods.get("robovast").await.unwrap().status?.phase.as_deref() == Some("Running"))
            .then_some(())
    })
    .await;
    pods
}

#[tokio::test]

async fn s3_through_kube_portforward_with_aws_sdk() {
    let (_sim, client) = start().await;
    let pods = robovast_pod(&client).await;
    // a local port whose every connection is one port-forward stream to 9000
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let bridge_pods = pods.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let pods = bridge_pods.clone();
            tokio::spawn(async move {
                let mut pf = pods.portforward("robovast", &[9000]).await.unwrap();
                let mut upstream = pf.take_stream(9000).unwrap();
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            });
        }
    });
    let creds =
        aws_sdk_s3::config::Credentials::new("minioadmin", "minioadmin", None, None, "test");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(format!("http://{local}"))
        .force_path_style(true)
        .credentials_provider(creds)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    s3.create_bucket().bucket("run-1").send().await.unwrap();
    s3.put_object()
        .bucket("run-1")
        .key("a/b.txt")
        .body(b"hello through port-forward".to_vec().into())
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("run-1")
        .key("a/b.txt")
        .range("bytes=6-12")
        .send()
        .await
        .unwrap();
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&bytes[..], b"through");
}

#[tokio::test]

async fn exec_reports_output_and_exit_status() {
    let (_sim, client) = start().await;
    let pods = robovast_pod(&client).await;
    let ap = AttachParams::default().container("archiver").stderr(true);
    let mut ok = pods
        .exec("robovast", ["sh", "-c", "echo hi; echo there >&2"], &ap)
        .await
        .unwrap();
    let mut out = String::new();
    ok.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let status = ok.take_status().unwrap().await.unwrap();
    assert_eq!(out, "hi\n");
    assert_eq!(status.status.as_deref(), Some("Success"));
    let mut failing = pods
        .exec("robovast", ["sh", "-c", "exit 3"], &ap)
        .await
        .unwrap();
    let status = failing.take_status().unwrap().await.unwrap();
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let code = status
        .details
        .and_then(|d| d.causes)
        .and_then(|c| {
            c.into_iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message);
    assert_eq!(code.as_deref(), Some("3"));
}

#[tokio::test]

async fn api_faults_are_seen_by_clients() {
    let (sim, retrying) = start().await;
    let client = kube_support::client_without_retry(&sim);
    let set = |cfg: serde_json::Value| {
        let client = client.clone();
        async move {
            let (code, body) = raw(&client, "PUT", "/sim/faults", &cfg.to_string()).await;
            assert_eq!(code, 200, "{body}");
        }
    };
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    // 429 with Retry-After, once
    set(
        json!({"seed": 7, "api": [{"verbs": ["list"], "resources": ["configmaps"], "max_hits": 1,
        "action": {"status": {"codes": [429], "retry_after_seconds": 2}}}]}),
    )
    .await;
    let req = http::Request::get("/api/v1/namespaces/default/configmaps")
        .body(Vec::new())
        .unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    cms.list(&ListParams::default()).await.unwrap();
    // kube's default client retries a 429 after Retry-After
    set(
        json!({"api": [{"verbs": ["list"], "resources": ["configmaps"], "max_hits": 1,
        "action": {"status": {"codes": [429], "retry_after_seconds": 1}}}]}),
    )
    .await;
    let t = Instant::now();
    Api::<ConfigMap>::default_namespaced(retrying)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "the retry waited for Retry-After"
    );
    // 500 and 503 as Status errors through kube-rs
    for code in [500u16, 503] {
        set(json!({"api": [{"verbs": ["create"], "resources": ["jobs"], "action": {"status": {"codes": [code]}}}]})).await;
        let jobs: Api<Job> = Api::default_namespaced(client.clone());
        let job: Job = serde_json::from_value(
            json!({"metadata": {"name": "f"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}),
        )
        .unwrap();
        match jobs.create(&PostParams::default(), &job).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, code),
            other => panic!("expected a {code}, got {other:?}"),
        }
    }
    // connection reset
    set(json!({"api": [{"verbs": ["get"], "resources": ["configmaps"], "max_hits": 1, "action": "reset"}]})).await;
    let err = cms.get("anything").await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "a reset is a transport error: {err:?}"
    );
    // latency
    set(json!({"api": [{"verbs": ["list"], "resources": ["configmaps"], "action": {"latency": {"ms": 300}}}]})).await;
    let t = Instant::now();
    cms.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    set(json!({})).await;
    let (code, body) = raw(&client, "GET", "/sim/faults", "").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"api\":[]"), "{body}");
}

#[tokio::test]
async fn configmap_volume_follows_updates() {
    use kube::api::{Patch, PatchParams};
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "scripts"}, "data": {"run.sh": "v1"}}))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "archiver"},
        "spec": {"volumes": [{"name": "scripts", "configMap": {"name": "scripts"}}],
                 "containers": [{"name": "archiver", "image": "archiver", "command": ["sleep", "infinity"],
                                 "volumeMounts": [{"name": "scripts", "mountPath": "/scripts"}]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let read = |pods: Api<Pod>| async move {
        let mut p = pods
            .exec(
                "archiver",
                ["cat", "/scripts/run.sh"],
                &AttachParams::default(),
            )
            .await
            .ok()?;
        let mut out = String::new();
        p.stdout()?.read_to_string(&mut out).await.ok()?;
        p.take_status()?.await;
        Some(out)
    };
    eventually("v1 visible", || {
        let pods = pods.clone();
        async move { (read(pods).await.as_deref() == Some("v1")).then_some(()) }
    })
    .await;
    cms.patch(
        "scripts",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"run.sh": "v2"}})),
    )
    .await
    .unwrap();
    eventually("v2 visible", || {
        let pods = pods.clone();
        async move { (read(pods).await.as_deref() == Some("v2")).then_some(()) }
    })
    .await;
}

/// The pod-restart fault (admin endpoint) as a client sees it: restartCount grows, and the
/// emptyDir keeps its files with `wipe=false` and loses them with `wipe=true`.
#[tokio::test]
async fn pod_restart_fault_keeps_or_wipes_the_empty_dir() {
    let (_sim, client) = start().await;
    let pods = robovast_pod(&client).await;
    let sh = |script: &'static str| {
        let pods = pods.clone();
        let ap = AttachParams::default().container("archiver");
        async move {
            let mut p = pods
                .exec("robovast", ["sh", "-c", script], &ap)
                .await
                .unwrap();
            let mut out = String::new();
            p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
            p.take_status().unwrap().await.unwrap();
            out
        }
    };
    sh("echo kept > /data/marker").await;
    let restarts = |p: Pod| p.status.unwrap().container_statuses.unwrap()[0].restart_count;
    for (wipe, want, count) in [("false", "kept\n", 1), ("true", "gone\n", 2)] {
        let (code, body) = raw(
            &client,
            "POST",
            &format!("/sim/pods/default/robovast/restart?wipe={wipe}"),
            "",
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(restarts(pods.get("robovast").await.unwrap()), count);
        let out = sh("cat /data/marker 2>/dev/null || echo gone").await;
        assert_eq!(out, want, "wipe={wipe}");
    }
}
