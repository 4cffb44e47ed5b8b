//! End to end through the real API server and controllers: the `robovast` pod and Service as
//! vast deploys them, S3 through kube-rs port-forward, exec in the archiver, and a Job's
//! scenario results landing in the run bucket.

mod kube_support;

use aws_sdk_s3::primitives::ByteStream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, AttachParams, PostParams};
use kube_support::*;
use tokio::io::AsyncReadExt;

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{Credentials, Region};
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "minioadmin",
            "minioadmin",
            None,
            None,
            "static",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn forward(api: Api<Pod>, port: u16) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let api = api.clone();
            tokio::spawn(async move {
                let Ok(mut pf) = api.portforward("robovast", &[port]).await else {
                    return;
                };
                let Some(mut s) = pf.take_stream(port) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut s).await;
            });
        }
    });
    addr
}

/// The `robovast` pod and Service as vast deploys them; returns once the pod is Running.
async fn deploy_robovast(client: &kube::Client) -> Api<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "robovast", "labels": {"role": "robovast"}},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "minio", "image": "minio/minio:latest", "args": ["server", "/data", "--console-address", ":9001"],
                 "env": [{"name": "MINIO_ROOT_USER", "value": "minioadmin"}, {"name": "MINIO_ROOT_PASSWORD", "value": "minioadmin"}],
                 "ports": [{"name": "s3", "containerPort": 9000}, {"name": "console", "containerPort": 9001}],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "http-server", "image": "nginx:alpine", "ports": [{"name": "http", "containerPort": 80}],
                 "volumeMounts": [{"name": "data", "mountPath": "/usr/share/nginx/html", "readOnly": true}]},
                {"name": "archiver", "image": "archiver", "command": ["sleep", "infinity"],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ]
        }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "robovast"},
        "spec": {"selector": {"role": "robovast"}, "ports": [{"name": "s3", "port": 9000, "targetPort": 9000}]}
    }))
    .expect("svc");
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .expect("svc");
    eventually("robovast running", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("robovast").await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        }
    })
    .await;
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robovast_pod_serves_s3_exec_and_collects_results() {
    let (sim, client) = start().await;
    let pods = deploy_robovast(&client).await;

    let local = forward(pods.clone(), 9000).await;
    let s3 = s3_client(&format!("http://{local}"));
    eventually("S3 answers through port-forward", || {
        let s3 = s3.clone();
        async move {
            s3.create_bucket()
                .bucket("run-x")
                .send()
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    s3.put_object()
        .bucket("run-x")
        .key("a/b.txt")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .expect("put");

    upload_inputs(&s3, "run-x").await;

    let mut p = pods
        .exec(
            "robovast",
            vec!["sh", "-c", "cat /data/run-x/a/b.txt; exit 4"],
            &AttachParams::default().container("archiver"),
        )
        .await
        .expect("exec");
    let mut out = String::new();
    p.stdout()
        .expect("stdout")
        .read_to_string(&mut out)
        .await
        .expect("read");
    let status = p
        .take_status()
        .expect("status")
        .await
        .expect("status arrives");
    assert_eq!(out, "hello");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));

    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "r1-cfg-0"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "robovast", "image": "scenario", "command": ["/bin/bash", "/config/entrypoint.sh"],
            "env": [
                {"name": "S3_ENDPOINT", "value": "http://robovast:9000"}, {"name": "S3_BUCKET", "value": "run-x"},
                {"name": "S3_ACCESS_KEY", "value": "minioadmin"}, {"name": "S3_SECRET_KEY", "value": "minioadmin"},
                {"name": "S3_PREFIX", "value": "cfg/0"}
            ]}]}}}
    }))
    .expect("job");
    Api::<Job>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &job)
        .await
        .expect("job");
    eventually("scenario results in the bucket", || {
        let s3 = s3.clone();
        async move {
            let l = s3
                .list_objects_v2()
                .bucket("run-x")
                .prefix("cfg/0/")
                .send()
                .await
                .ok()?;
            (l.contents().len() >= 3).then_some(())
        }
    })
    .await;
    // The real kubectl (websocket v5 exec) gets output and the exit code.
    let dir = tempfile::tempdir().expect("tempdir");
    sim.write_kubeconfig(&dir.path().join("kubeconfig"))
        .expect("kubeconfig");
    let out = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .env("HOME", dir.path())
        .args([
            "--request-timeout=30s",
            "exec",
            "robovast",
            "-c",
            "archiver",
            "--",
        ])
        .args(["sh", "-c", "cat /data/run-x/a/b.txt; echo oops >&2; exit 3"])
        .output()
        .await
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    assert_eq!(
        out.status.code(),
        Some(3),
        "kubectl exits with the command's code"
    );
    // An API fault on the portforward verb is seen by kube-rs. (500: kube-rs 5 retries 429,
    // 503 and 504 itself, honouring Retry-After, so those would be absorbed by its retries.)
    sim.faults().set(
        serde_json::from_value(serde_json::json!({"api": [{
            "verbs": ["portforward"], "max_hits": 1,
            "action": {"status": {"codes": [500]}}
        }]}))
        .expect("fault config"),
    );
    let first = pods.portforward("robovast", &[9000]).await;
    assert!(
        matches!(&first, Err(kube::Error::Api(s)) if s.code == 500),
        "injected 500 on portforward"
    );
    let mut pf = pods
        .portforward("robovast", &[9000])
        .await
        .expect("max_hits spent: works again");
    assert!(pf.take_stream(9000).is_some());
    pf.abort();
}

/// The files the `s3-init` container of a vast scenario pod copies from the bucket root.
const INPUTS: [&str; 4] = [
    "entrypoint.sh",
    "secondary_entrypoint.sh",
    "collect_sysinfo.py",
    "scenario.osc",
];

async fn upload_inputs(s3: &aws_sdk_s3::Client, bucket: &str) {
    for key in INPUTS {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from_static(b"#!/bin/sh\n"))
            .send()
            .await
            .expect("put input");
    }
}

/// A Job shaped like vast's: `s3-init` init container and scenario container with the S3 env.
fn scenario_job(name: &str, bucket: &str, duration_ms: u64) -> Job {
    let s3_env = serde_json::json!([
        {"name": "S3_ENDPOINT", "value": "http://robovast:9000"}, {"name": "S3_BUCKET", "value": bucket},
        {"name": "S3_ACCESS_KEY", "value": "minioadmin"}, {"name": "S3_SECRET_KEY", "value": "minioadmin"}
    ]);
    let mut main_env = s3_env.clone();
    if let Some(a) = main_env.as_array_mut() {
        a.push(serde_json::json!({"name": "S3_PREFIX", "value": format!("{name}/0")}));
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"sim.vast.dev/duration-ms": duration_ms.to_string()}},
            "spec": {"restartPolicy": "Never",
                "volumes": [{"name": "config", "emptyDir": {}}],
                "initContainers": [{"name": "s3-init", "image": "minio/mc", "command": ["sh", "-c", "..."],
                    "env": s3_env, "volumeMounts": [{"name": "config", "mountPath": "/config"}]}],
                "containers": [{"name": "robovast", "image": "scenario",
                    "command": ["/bin/bash", "/config/entrypoint.sh"], "env": main_env}]}}}
    }))
    .expect("job")
}

async fn job_pod(pods: &Api<Pod>, job: &str, phase: &str) -> Pod {
    eventually(&format!("pod of {job} {phase}"), || {
        let pods = pods.clone();
        let sel = format!("job-name={job}");
        let phase = phase.to_string();
        async move {
            let list = pods
                .list(&kube::api::ListParams::default().labels(&sel))
                .await
                .ok()?;
            list.items.into_iter().find(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase.as_str())
            })
        }
    })
    .await
}

fn terminated(
    statuses: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
    name: &str,
) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    statuses
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref()?.terminated.clone())
        .unwrap_or_else(|| panic!("container {name} terminated: {statuses:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_pods_fail_as_their_init_container_and_upload_would() {
    let mut config = vast_sim::config::SimConfig::default();
    config.pods.result_bytes = 777;
    let (sim, client) = start_with(config).await;
    let pods = deploy_robovast(&client).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let direct = sim
        .dataplane()
        .endpoint("default", "robovast", 9000)
        .expect("S3 endpoint");
    let s3 = s3_client(&format!("http://{direct}"));

    // No bucket: s3-init exits 1, the scenario container never starts, the pod and Job fail.
    jobs.create(
        &PostParams::default(),
        &scenario_job("nobucket", "run-y", 100),
    )
    .await
    .expect("job");
    let pod = job_pod(&pods, "nobucket", "Failed").await;
    let status = pod.status.expect("status");
    let init = terminated(status.init_container_statuses.as_ref(), "s3-init");
    assert_eq!(init.exit_code, 1);
    let msg = init.message.unwrap_or_default();
    assert!(
        msg.contains("run-y") && msg.contains("NoSuchBucket"),
        "{msg}"
    );
    assert!(
        !msg.contains("minioadmin"),
        "no credentials in the message: {msg}"
    );
    let main = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref()?.waiting.clone())
        .expect("scenario container still waiting");
    assert_eq!(main.reason.as_deref(), Some("PodInitializing"));
    eventually("job nobucket Failed", || {
        let jobs = jobs.clone();
        async move {
            let j = jobs.get("nobucket").await.ok()?;
            j.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Failed" && c.status == "True")
                .then_some(())
        }
    })
    .await;

    // Bucket without all the input files: fails naming the first missing one.
    s3.create_bucket()
        .bucket("run-y")
        .send()
        .await
        .expect("bucket");
    s3.put_object()
        .bucket("run-y")
        .key("entrypoint.sh")
        .body(ByteStream::from_static(b"#!/bin/sh\n"))
        .send()
        .await
        .expect("put");
    jobs.create(
        &PostParams::default(),
        &scenario_job("nofiles", "run-y", 100),
    )
    .await
    .expect("job");
    let pod = job_pod(&pods, "nofiles", "Failed").await;
    let init = terminated(
        pod.status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref()),
        "s3-init",
    );
    let msg = init.message.unwrap_or_default();
    assert!(
        msg.contains("s3://run-y/secondary_entrypoint.sh is missing"),
        "{msg}"
    );

    // All inputs there: the pod succeeds and writes results of the configured size.
    upload_inputs(&s3, "run-y").await;
    jobs.create(&PostParams::default(), &scenario_job("ok", "run-y", 100))
        .await
        .expect("job");
    let pod = job_pod(&pods, "ok", "Succeeded").await;
    assert_eq!(
        terminated(
            pod.status
                .as_ref()
                .and_then(|s| s.init_container_statuses.as_ref()),
            "s3-init"
        )
        .exit_code,
        0
    );
    let head = s3
        .head_object()
        .bucket("run-y")
        .key("ok/0/logs/system.log")
        .send()
        .await
        .expect("results written");
    assert_eq!(
        head.content_length(),
        Some(777),
        "pods.result_bytes applies"
    );

    // The bucket disappears while the scenario runs: the upload fails, so does the pod.
    jobs.create(&PostParams::default(), &scenario_job("gone", "run-y", 3000))
        .await
        .expect("job");
    job_pod(&pods, "gone", "Running").await;
    let objects = s3
        .list_objects_v2()
        .bucket("run-y")
        .send()
        .await
        .expect("list");
    for o in objects.contents() {
        s3.delete_object()
            .bucket("run-y")
            .key(o.key().unwrap_or_default())
            .send()
            .await
            .expect("delete object");
    }
    s3.delete_bucket()
        .bucket("run-y")
        .send()
        .await
        .expect("delete bucket");
    let pod = job_pod(&pods, "gone", "Failed").await;
    let main = terminated(
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref()),
        "robovast",
    );
    assert_eq!(main.exit_code, 75, "EX_TEMPFAIL, as vast's entrypoint");
    let msg = main.message.unwrap_or_default();
    assert!(
        msg.contains("uploading results failed") && msg.contains("NoSuchBucket"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preempted_and_oomkilled_scenario_pods_write_no_results() {
    let (sim, client) = start_with(vast_sim::config::SimConfig::default()).await;
    let pods = deploy_robovast(&client).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let direct = sim
        .dataplane()
        .endpoint("default", "robovast", 9000)
        .expect("S3 endpoint");
    let s3 = s3_client(&format!("http://{direct}"));
    s3.create_bucket()
        .bucket("run-z")
        .send()
        .await
        .expect("bucket");
    upload_inputs(&s3, "run-z").await;
    let keys = |prefix: &'static str| {
        let s3 = s3.clone();
        async move {
            let l = s3
                .list_objects_v2()
                .bucket("run-z")
                .prefix(prefix)
                .send()
                .await
                .expect("list");
            l.contents()
                .iter()
                .map(|o| o.key().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        }
    };
    sim.faults().set(
        serde_json::from_value(serde_json::json!({
            "preempt": {"fraction": 1.0, "max_hits": 1},
            "pods": [{"match": "oom", "outcome": "oomkilled"},
                     {"match": "bad", "outcome": "fail", "exit_code": 3}]
        }))
        .expect("fault config"),
    );
    // preempted (no results), then replaced (results)
    let mut spot = scenario_job("spot", "run-z", 1000);
    spot.spec.as_mut().unwrap().pod_failure_policy = Some(
        serde_json::from_value(serde_json::json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}))
        .expect("policy"),
    );
    jobs.create(&PostParams::default(), &spot)
        .await
        .expect("job");
    job_pod(&pods, "spot", "Failed").await;
    assert!(
        keys("spot/").await.is_empty(),
        "a preempted pod uploads nothing"
    );
    job_pod(&pods, "spot", "Succeeded").await;
    assert!(keys("spot/0/")
        .await
        .contains(&"spot/0/test.xml".to_string()));
    // OOMKilled: no results; failed with an exit code: results with a failure
    jobs.create(&PostParams::default(), &scenario_job("oom", "run-z", 100))
        .await
        .expect("job");
    jobs.create(&PostParams::default(), &scenario_job("bad", "run-z", 100))
        .await
        .expect("job");
    let oom = job_pod(&pods, "oom", "Failed").await;
    let t = terminated(
        oom.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref()),
        "robovast",
    );
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    let bad = job_pod(&pods, "bad", "Failed").await;
    let t = terminated(
        bad.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref()),
        "robovast",
    );
    assert_eq!(t.exit_code, 3);
    assert!(
        keys("oom/").await.is_empty(),
        "an OOMKilled pod uploads nothing"
    );
    let xml = s3
        .get_object()
        .bucket("run-z")
        .key("bad/0/test.xml")
        .send()
        .await
        .expect("results of the failed scenario")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert!(String::from_utf8_lossy(&xml).contains("failures=\"1\""));
}
