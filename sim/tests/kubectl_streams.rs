//! The real `kubectl port-forward` and `kubectl exec` against the sim, in both of kubectl's
//! wire protocols: SPDY/3.1 (kubectl ≤ 1.29's only one, forced here with
//! `KUBECTL_PORT_FORWARD_WEBSOCKETS=false` / `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`) and
//! the websocket ones of kubectl ≥ 1.30 (port-forward tunnels SPDY in websocket messages). S3
//! through the forwarded port is driven by boto3, as upstream's scripts do. Also `apply` through
//! the OpenAPI v2 document, as kubectl ≤ 1.28 computes its patches.

mod kube_support;

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube_support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vast_sim::server::SimHandle;

struct Env {
    _sim: SimHandle,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let (sim, client) = start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        sim.write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        deploy_robovast(&client).await;
        Env { _sim: sim, dir }
    }

    fn kubectl(&self, spdy: bool, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .env(
                "KUBECTL_PORT_FORWARD_WEBSOCKETS",
                if spdy { "false" } else { "true" },
            )
            .env(
                "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
                if spdy { "false" } else { "true" },
            )
            .arg("--request-timeout=30s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// `kubectl exec`, optionally feeding stdin: (stdout, stderr, exit code).
    async fn exec(&self, spdy: bool, args: &[&str], stdin: Option<&str>) -> (String, String, i32) {
        let mut all = vec!["exec"];
        if stdin.is_some() {
            all.push("-i");
        }
        all.extend(args);
        let (code, out, err) =
            run_client(self.kubectl(spdy, &all), stdin, Duration::from_secs(60)).await;
        (out, err, code)
    }

    /// `kubectl port-forward pod/robovast :<port>`; returns the child and the local port once
    /// kubectl printed `Forwarding from`.
    async fn port_forward(&self, spdy: bool, port: u16) -> (tokio::process::Child, u16) {
        let target = format!(":{port}");
        let mut child = self
            .kubectl(spdy, &["port-forward", "pod/robovast", &target])
            .spawn()
            .expect("kubectl runs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl port-forward prints its port")
            .expect("read")
            .expect("a line");
        // Forwarding from 127.0.0.1:34567 -> 9000
        let local = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected port-forward output: {line}"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, local)
    }
}

async fn deploy_robovast(client: &kube::Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "robovast", "labels": {"role": "robovast"}},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "minio", "image": "minio/minio:latest", "args": ["server", "/data", "--console-address", ":9001"],
                 "env": [{"name": "MINIO_ROOT_USER", "value": "minioadmin"}, {"name": "MINIO_ROOT_PASSWORD", "value": "minioadmin"}],
                 "ports": [{"name": "s3", "containerPort": 9000}],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "archiver", "image": "archiver", "command": ["sleep", "infinity"],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ]
        }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    eventually("robovast running", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("robovast").await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        }
    })
    .await;
}

/// boto3 through the forwarded port: a multipart upload, a paginated listing and ranged
/// reads, each checked byte for byte.
const BOTO3: &str = r#"
import hashlib, os, sys
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="minioadmin",
                  aws_secret_access_key="minioadmin", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
s3.create_bucket(Bucket="fidelity")
data = os.urandom(11 * 1024 * 1024 + 17)
mp = s3.create_multipart_upload(Bucket="fidelity", Key="big.bin")
parts, part = [], 5 * 1024 * 1024
for i in range(0, len(data), part):
    n = len(parts) + 1
    r = s3.upload_part(Bucket="fidelity", Key="big.bin", PartNumber=n, UploadId=mp["UploadId"], Body=data[i:i + part])
    parts.append({"PartNumber": n, "ETag": r["ETag"]})
s3.complete_multipart_upload(Bucket="fidelity", Key="big.bin", UploadId=mp["UploadId"], MultipartUpload={"Parts": parts})
got = s3.get_object(Bucket="fidelity", Key="big.bin")["Body"].read()
assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "multipart object differs"
r = s3.get_object(Bucket="fidelity", Key="big.bin", Range="bytes=1000-1999")
assert r["ContentRange"] == f"bytes 1000-1999/{len(data)}", r["ContentRange"]
assert r["Body"].read() == data[1000:2000], "ranged read differs"
# Non-empty bodies: botocore keeps a stale response parser on a kept-alive connection after a
# final answer to `Expect: 100-continue` (what MinIO, like any Go server, gives an empty PUT).
for i in range(5):
    s3.put_object(Bucket="fidelity", Key=f"small/{i}", Body=b"x" * (i + 1))
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="fidelity", Prefix="small/", PaginationConfig={"PageSize": 2}):
    keys += [o["Key"] for o in page.get("Contents", [])]
assert keys == [f"small/{i}" for i in range(5)], keys
print("boto3 ok", len(data))
"#;

async fn boto3_through_port_forward(spdy: bool) {
    let env = Env::start().await;
    let (mut pf, local) = env.port_forward(spdy, 9000).await;
    let script = env.dir.path().join("boto3_check.py");
    std::fs::write(&script, BOTO3).expect("script");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(&script)
            .arg(format!("http://127.0.0.1:{local}"))
            .output(),
    )
    .await
    .expect("boto3 finished")
    .expect("python3 runs");
    let _ = pf.kill().await;
    assert!(
        out.status.success(),
        "boto3 through kubectl port-forward (spdy: {spdy}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("boto3 ok 11534353"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_spdy_carries_boto3() {
    boto3_through_port_forward(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket_tunnelled_spdy_carries_boto3() {
    boto3_through_port_forward(false).await;
}

/// A port nothing listens on: kubectl reports the kubelet's error for that connection and
/// keeps forwarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_to_a_closed_port_reports_the_error() {
    let env = Env::start().await;
    for spdy in [true, false] {
        let (mut pf, local) = env.port_forward(spdy, 7777).await;
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .expect("kubectl listens");
        let _ = conn.write_all(b"hello").await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::AsyncReadExt::read(&mut conn, &mut buf),
        )
        .await
        .expect("the connection ends")
        .unwrap_or(0);
        assert_eq!(n, 0, "nothing listens on 7777 in the pod");
        let _ = pf.kill().await;
        let out = pf.wait_with_output().await.expect("kubectl output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("error forwarding port 7777 to pod") && err.contains("connection refused"),
            "spdy: {spdy}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_spdy_and_websocket_streams_stdin_output_and_exit_codes() {
    let env = Env::start().await;
    for spdy in [true, false] {
        let (out, err, code) = env
            .exec(
                spdy,
                &[
                    "robovast",
                    "-c",
                    "archiver",
                    "--",
                    "sh",
                    "-c",
                    "echo out; echo err >&2; exit 3",
                ],
                None,
            )
            .await;
        assert_eq!(out, "out\n", "spdy: {spdy}");
        assert!(err.contains("err\n"), "spdy: {spdy}: {err}");
        assert!(
            err.contains("command terminated with exit code 3"),
            "spdy: {spdy}: {err}"
        );
        assert_eq!(code, 3, "spdy: {spdy}");
        // A script on stdin (upstream runs `python3 - < script` in the pod); stdin's end is
        // the process's EOF.
        let (out, err, code) = env
            .exec(
                spdy,
                &["robovast", "-c", "archiver", "--", "python3", "-"],
                Some("import sys\nprint(sum(range(10)), sys.stdin.read() == '')\n"),
            )
            .await;
        assert_eq!(
            (out.as_str(), code),
            ("45 True\n", 0),
            "spdy: {spdy}: {err}"
        );
        // A large output arrives whole.
        let (out, _, code) = env
            .exec(
                spdy,
                &[
                    "robovast",
                    "-c",
                    "archiver",
                    "--",
                    "python3",
                    "-c",
                    "print('y' * 3000000)",
                ],
                None,
            )
            .await;
        assert_eq!((out.len(), code), (3_000_001, 0), "spdy: {spdy}");
    }
}

/// Exec and `kubectl cp` see the pod's filesystem: its mounts at their paths, a script on
/// stdin opening `/data/...`, `tar` of a pod path (what `kubectl cp` runs), and nothing of the
/// host's other directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_kubectl_cp_see_the_pods_filesystem() {
    if !vast_sim::dataplane::exec_isolated() {
        eprintln!("skipped: this machine allows no mount namespace (exec rewrites paths)");
        return;
    }
    let env = Env::start().await;
    let archiver = ["robovast", "-c", "archiver", "--"];
    let cmd = |extra: &[&'static str]| {
        let mut v: Vec<&str> = archiver.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let (_, err, code) = env
        .exec(
            false,
            &cmd(&[
                "sh",
                "-c",
                "mkdir -p /data/run && echo result > /data/run/out.txt",
            ]),
            None,
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let (out, _, _) = env
        .exec(false, &cmd(&["find", "/data", "-name", "*.txt"]), None)
        .await;
    assert_eq!(out.trim(), "/data/run/out.txt");
    let (out, err, code) = env
        .exec(
            true,
            &cmd(&["python3", "-"]),
            Some("print(open('/data/run/out.txt').read().strip())\n"),
        )
        .await;
    assert_eq!((out.trim(), code), ("result", 0), "{err}");
    // The host's directories (the test's temporary directory, the repository) are not there.
    let host_dir = env.dir.path().display().to_string();
    let repo = env!("CARGO_MANIFEST_DIR");
    let probe = format!("test -e '{host_dir}' || test -e '{repo}' && echo visible || echo hidden");
    let (out, _, _) = env
        .exec(
            false,
            &["robovast", "-c", "archiver", "--", "sh", "-c", &probe],
            None,
        )
        .await;
    assert_eq!(out.trim(), "hidden");
    // kubectl cp out of the pod (tar in the container).
    let dest = env.dir.path().join("copied.txt");
    let dest_s = dest.display().to_string();
    let mut cp = env.kubectl(
        false,
        &[
            "cp",
            "-c",
            "archiver",
            "robovast:/data/run/out.txt",
            &dest_s,
        ],
    );
    let out = cp.output().await.expect("kubectl cp runs");
    assert!(
        out.status.success(),
        "kubectl cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&dest).expect("copied"), "result\n");
    // And into the pod.
    std::fs::write(env.dir.path().join("in.txt"), "input\n").expect("write");
    let src = env.dir.path().join("in.txt").display().to_string();
    let out = env
        .kubectl(
            false,
            &["cp", "-c", "archiver", &src, "robovast:/data/in.txt"],
        )
        .output()
        .await
        .expect("kubectl cp runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, _, _) = env.exec(false, &cmd(&["cat", "/data/in.txt"]), None).await;
    assert_eq!(out, "input\n");
}

/// kubectl ≤ 1.28 computes `apply`'s patches from the OpenAPI v2 document (protobuf), as any
/// kubectl does with `KUBECTL_OPENAPIV3_PATCH=false`: create, change and re-apply a built-in
/// object and Kueue's custom resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_through_openapi_v2_as_older_kubectl_does() {
    let env = Env::start().await;
    let file = env.dir.path().join("objects.yaml");
    let write = |value: &str| {
        std::fs::write(
            &file,
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm1}}\ndata: {{a: \"{value}\"}}\n---\n\
                 apiVersion: kueue.x-k8s.io/v1beta1\nkind: ResourceFlavor\nmetadata: {{name: flavor-{value}}}\n"
            ),
        )
        .expect("write")
    };
    let file_s = file.display().to_string();
    for (value, expect) in [("1", "created"), ("2", "configured"), ("2", "unchanged")] {
        write(value);
        let mut cmd = env.kubectl(false, &["apply", "-f", &file_s]);
        cmd.env("KUBECTL_OPENAPIV3_PATCH", "false");
        let out = cmd.output().await.expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("configmap/cm1 {expect}")),
            "{stdout}"
        );
    }
    let out = env
        .kubectl(false, &["get", "cm", "cm1", "-o", "jsonpath={.data.a}"])
        .output()
        .await
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");
}
