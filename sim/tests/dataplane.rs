//! Data-plane tests: the robovast pod's S3 (direct and through kube-rs port-forward), its HTTP
//! file server, exec with exit status and path mapping, scenario results, restarts, and each
//! data-plane fault kind as a client sees it.

mod support;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use kube::api::AttachParams;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vast_sim::faults::{FaultConfig, PortForwardFaults, S3FaultRule};
use vast_sim::pod::{PodOutcome, ResolvedPod};

fn code_of<E: aws_sdk_s3::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_string()
}

/// The calls vast makes, against one S3 endpoint URL.
async fn s3_roundtrip(endpoint: &str) {
    let s3 = s3_client(endpoint, "minioadmin");
    s3.create_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect("create bucket");
    s3.head_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect("head bucket");
    let buckets = s3.list_buckets().send().await.expect("list buckets");
    assert_eq!(
        buckets
            .buckets()
            .iter()
            .filter_map(|b| b.name())
            .collect::<Vec<_>>(),
        vec!["run-1"]
    );

    // Put, ranged get.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    s3.put_object()
        .bucket("run-1")
        .key("cfg/0/a.bin")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    let got = s3
        .get_object()
        .bucket("run-1")
        .key("cfg/0/a.bin")
        .range("bytes=10-19")
        .send()
        .await
        .expect("get range");
    assert_eq!(got.content_range(), Some("bytes 10-19/100000"));
    let body = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(&body[..], &data[10..20]);

    // Multipart (5 MiB minimum part size except the last).
    let up = s3
        .create_multipart_upload()
        .bucket("run-1")
        .key("big.bin")
        .send()
        .await
        .expect("create mpu");
    let id = up.upload_id().expect("upload id").to_string();
    let part1 = vec![7u8; 5 << 20];
    let part2 = vec![9u8; 1000];
    let mut parts = Vec::new();
    for (n, p) in [(1, part1.clone()), (2, part2.clone())] {
        let r = s3
            .upload_part()
            .bucket("run-1")
            .key("big.bin")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(p))
            .send()
            .await
            .expect("upload part");
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(r.e_tag().map(str::to_string))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket("run-1")
        .key("big.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete mpu");
    let head = s3
        .head_object()
        .bucket("run-1")
        .key("big.bin")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some((5 << 20) + 1000));

    // ListObjectsV2 pagination.
    for i in 0..7 {
        s3.put_object()
            .bucket("run-1")
            .key(format!("p/{i}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let mut pages = s3
        .list_objects_v2()
        .bucket("run-1")
        .prefix("p/")
        .max_keys(3)
        .into_paginator()
        .send();
    let (mut n_pages, mut keys) = (0, Vec::new());
    while let Some(page) = pages.next().await {
        let page = page.expect("page");
        n_pages += 1;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    assert_eq!((n_pages, keys.len()), (3, 7));

    // MinIO semantics: non-empty bucket cannot be deleted, missing bucket is NoSuchBucket.
    let err = s3
        .delete_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect_err("non-empty delete");
    assert_eq!(code_of(&err), "BucketNotEmpty");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(409));
    let err = s3
        .get_object()
        .bucket("nope")
        .key("k")
        .send()
        .await
        .expect_err("missing bucket");
    assert_eq!(code_of(&err), "NoSuchBucket");
    let err = s3
        .get_object()
        .bucket("run-1")
        .key("missing")
        .send()
        .await
        .expect_err("missing key");
    assert_eq!(code_of(&err), "NoSuchKey");

    // DeleteObjects, then the bucket can go.
    let listed = s3
        .list_objects_v2()
        .bucket("run-1")
        .send()
        .await
        .expect("list");
    let ids: Vec<ObjectIdentifier> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .map(|k| ObjectIdentifier::builder().key(k).build().expect("id"))
        .collect();
    assert_eq!(ids.len(), 9);
    s3.delete_objects()
        .bucket("run-1")
        .delete(
            Delete::builder()
                .set_objects(Some(ids))
                .build()
                .expect("delete"),
        )
        .send()
        .await
        .expect("delete objects");
    s3.delete_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect("delete empty bucket");

    // MinIO's health probes answer without credentials.
    let probe = endpoint.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(probe)
        .await
        .expect("connect");
    conn.write_all(b"GET /minio/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut resp = String::new();
    conn.read_to_string(&mut resp).await.expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // SigV4 is checked.
    let bad = s3_client(endpoint, "wrong-secret");
    let err = bad.list_buckets().send().await.expect_err("wrong secret");
    assert_eq!(code_of(&err), "SignatureDoesNotMatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_direct_behaves_like_minio() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    s3_roundtrip(&format!("http://{}", sim.s3_direct("robovast"))).await;
    // Buckets are directories under the MinIO data path, inside the pod's volume.
    let s3 = s3_client(
        &format!("http://{}", sim.s3_direct("robovast")),
        "minioadmin",
    );
    s3.create_bucket()
        .bucket("run-2")
        .send()
        .await
        .expect("create");
    assert!(sim
        .dir
        .path()
        .join("dp/pods/default/robovast/volumes/storage/run-2")
        .is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_through_kube_portforward() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let local = forward(sim.pods_api(), "robovast", 9000).await;
    s3_roundtrip(&format!("http://{local}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portforward_to_unserved_port_reports_error() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let mut pf = sim
        .pods_api()
        .portforward("robovast", &[7777])
        .await
        .expect("portforward");
    let err = pf.take_error(7777).expect("error channel").await;
    assert!(
        err.is_some_and(|e| e.contains("7777")),
        "error message names the port"
    );
    pf.abort();
}

async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    range: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{range}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (code, head, buf[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_file_server_with_ranges_through_portforward() {
    let sim = Sim::start().await;
    let pod = robovast_pod();
    sim.add(pod.clone()).await;
    let data_dir = sim
        .dir
        .path()
        .join("dp/pods/default/robovast/volumes/storage");
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 256) as u8).collect();
    std::fs::write(data_dir.join("run-1.tar.gz"), &content).expect("write");
    std::fs::write(sim.dir.path().join("secret.txt"), b"outside").expect("write");
    let local = forward(sim.pods_api(), "robovast", 80).await;

    let (code, head, body) = http_get(local, "/run-1.tar.gz", None).await;
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("accept-ranges: bytes"));
    assert_eq!(body, content);
    let (code, head, body) = http_get(local, "/run-1.tar.gz", Some("bytes=9000-")).await;
    assert_eq!(code, 206);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-range: bytes 9000-9999/10000"),
        "{head}"
    );
    assert_eq!(body, &content[9000..]);
    let (code, head, _) = http_get(local, "/run-1.tar.gz", Some("bytes=10000-")).await;
    assert_eq!(code, 416);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-range: bytes */10000"));
    assert_eq!(http_get(local, "/missing", None).await.0, 404);
    assert_eq!(http_get(local, "/../../../secret.txt", None).await.0, 400);
    assert_eq!(
        http_get(local, "/%2e%2e/%2e%2e/%2e%2e/secret.txt", None)
            .await
            .0,
        400
    );
    assert_eq!(http_get(local, "/", None).await.0, 403);
}

async fn exec(
    sim: &Sim,
    container: &str,
    cmd: &[&str],
    stdin: Option<&[u8]>,
) -> (String, String, Option<i32>) {
    let mut ap = AttachParams::default().container(container).stderr(true);
    if stdin.is_some() {
        ap = ap.stdin(true);
    }
    let mut p = sim
        .pods_api()
        .exec("robovast", cmd.to_vec(), &ap)
        .await
        .expect("exec");
    if let Some(input) = stdin {
        let mut w = p.stdin().expect("stdin");
        w.write_all(input).await.expect("write stdin");
        w.shutdown().await.expect("close stdin");
    }
    let mut out = p.stdout().expect("stdout");
    let mut err = p.stderr().expect("stderr");
    let status = p.take_status().expect("status");
    let (mut o, mut e) = (String::new(), String::new());
    let (r1, r2) = tokio::join!(out.read_to_string(&mut o), err.read_to_string(&mut e));
    r1.expect("read stdout");
    r2.expect("read stderr");
    let status = status.await.expect("a status arrives");
    let code = match status.status.as_deref() {
        Some("Success") => Some(0),
        _ => {
            assert_eq!(
                status.reason.as_deref(),
                Some("NonZeroExitCode"),
                "{status:?}"
            );
            status
                .details
                .and_then(|d| d.causes)
                .and_then(|c| {
                    c.into_iter()
                        .find(|c| c.reason.as_deref() == Some("ExitCode"))
                })
                .and_then(|c| c.message)
                .and_then(|m| m.parse().ok())
        }
    };
    let _ = p.join().await;
    (o, e, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_and_exit_status() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let (o, e, code) = exec(
        &sim,
        "archiver",
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        None,
    )
    .await;
    assert_eq!((o.as_str(), e.as_str(), code), ("out\n", "err\n", Some(3)));
    let (o, _, code) = exec(&sim, "archiver", &["echo", "hi"], None).await;
    assert_eq!((o.as_str(), code), ("hi\n", Some(0)));
    // stdin, closed by the client (v5 close frame).
    let (o, _, code) = exec(&sim, "archiver", &["cat"], Some(b"piped input")).await;
    assert_eq!((o.as_str(), code), ("piped input", Some(0)));
    // `test -f` as vast uses it.
    let (_, _, code) = exec(
        &sim,
        "archiver",
        &["test", "-f", "/data/missing.tar.gz"],
        None,
    )
    .await;
    assert_eq!(code, Some(1));
    // Large output arrives complete.
    let (o, _, code) = exec(
        &sim,
        "archiver",
        &["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a"],
        None,
    )
    .await;
    assert_eq!((o.len(), code), (3_000_000, Some(0)));
    // A missing program is a failure status, not a hang.
    let mut p = sim
        .pods_api()
        .exec(
            "robovast",
            vec!["/nonexistent/program"],
            &AttachParams::default().container("archiver"),
        )
        .await
        .expect("exec");
    let st = p
        .take_status()
        .expect("status")
        .await
        .expect("status arrives");
    assert_eq!(st.status.as_deref(), Some("Failure"));
    // An unknown container is a 400 Status before the upgrade.
    let err = sim
        .pods_api()
        .exec(
            "robovast",
            vec!["true"],
            &AttachParams::default().container("nope"),
        )
        .await
        .err()
        .expect("unknown container fails");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_maps_paths_env_and_s3() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let vol = sim
        .dir
        .path()
        .join("dp/pods/default/robovast/volumes/storage");
    let script = sim
        .dir
        .path()
        .join("dp/pods/default/robovast/volumes/scripts/hello.sh");
    let mtime = || {
        std::fs::metadata(&script)
            .and_then(|m| m.modified())
            .expect("script mtime")
    };
    let before = mtime();
    // argv paths under a mountPath land in the volume dir; configMap files are there.
    let (o, _, code) = exec(
        &sim,
        "archiver",
        &[
            "sh",
            "-c",
            "echo made > /data/f.txt && sh /scripts/hello.sh exec && echo $WORK_DIR",
        ],
        None,
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(
        std::fs::read_to_string(vol.join("f.txt")).expect("file in volume"),
        "made\n"
    );
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0], "hello from exec");
    // In its own mount namespace the process sees the pod's paths; without one, the host's.
    let isolated = vast_sim::dataplane::exec_isolated();
    let seen = |p: &str| {
        if isolated {
            p.to_string()
        } else {
            vol.join(p.trim_start_matches("/data/"))
                .display()
                .to_string()
        }
    };
    assert_eq!(lines[1], seen("/data/work"));
    assert_eq!(
        mtime(),
        before,
        "exec does not rewrite unchanged configMap files"
    );
    // `ls /data/*.tar.gz` inside `sh -c` as `download --port-forward-only` does.
    std::fs::write(vol.join("run-9.tar.gz"), b"z").expect("write");
    let (o, _, _) = exec(
        &sim,
        "archiver",
        &["sh", "-c", "ls /data/*.tar.gz 2>/dev/null || true"],
        None,
    )
    .await;
    assert_eq!(o.trim(), seen("/data/run-9.tar.gz"));
    // S3_ENDPOINT points at the pod's S3 listener; `python` runs python3; boto3-free check
    // with the stdlib: the endpoint answers (403 without credentials) over localhost too.
    let direct = sim.s3_direct("robovast");
    let script = "import os,urllib.request,urllib.error\n\
        ep=os.environ['S3_ENDPOINT']\nprint(ep)\n\
        try:\n  urllib.request.urlopen(ep + '/')\nexcept urllib.error.HTTPError as e:\n  print(e.code)\n";
    let (o, e, code) = exec(&sim, "archiver", &["python", "-"], Some(script.as_bytes())).await;
    assert_eq!(code, Some(0), "stderr: {e}");
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines, vec![format!("http://{direct}").as_str(), "403"]);
    let (o, _, _) = exec(&sim, "archiver", &["echo", "http://localhost:9000/x"], None).await;
    assert_eq!(o.trim(), format!("http://{direct}/x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_v4_is_accepted_and_detached_processes_die_with_the_pod() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    // A v4-only client (kube-rs offers v5 first) gets v4, the status on channel 3 and a
    // close frame with code 1000 (Go clients such as kubectl fail on a status-less close).
    {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::Message;
        let url = format!(
            "ws://{}/api/v1/namespaces/default/pods/robovast/exec?command=sh&command=-c&command=exit%205&container=archiver&stdout=true",
            sim.addr
        );
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v4.channel.k8s.io".parse().expect("header"),
        );
        let (mut ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("v4 upgrade");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("v4.channel.k8s.io")
        );
        let (mut status, mut close) = (None, None);
        while let Some(msg) = ws.next().await {
            match msg.expect("frame") {
                Message::Binary(d) if d.first() == Some(&3) => {
                    status = Some(String::from_utf8_lossy(&d[1..]).to_string())
                }
                Message::Close(c) => {
                    close = c.map(|c| c.code);
                    break;
                }
                _ => {}
            }
        }
        let status = status.expect("status on channel 3");
        assert!(
            status.contains("NonZeroExitCode") && status.contains("\"5\""),
            "{status}"
        );
        assert_eq!(close, Some(CloseCode::Normal));
    }

    // A detached process started through exec is killed when the pod goes.
    let vol = sim
        .dir
        .path()
        .join("dp/pods/default/robovast/volumes/storage");
    let (_, _, code) = exec(
        &sim,
        "archiver",
        &[
            "sh",
            "-c",
            "nohup sleep 300 >/dev/null 2>&1 & echo $! > /data/pid",
        ],
        None,
    )
    .await;
    assert_eq!(code, Some(0));
    let pid: i32 = std::fs::read_to_string(vol.join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid number");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    sim.dp
        .pod_deleted("default", "robovast")
        .await
        .expect("delete");
    let mut gone = false;
    for _ in 0..100 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its reaper.
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "detached process {pid} survived pod deletion");
    assert!(!vol.exists(), "pod volume dirs removed");
    assert_eq!(sim.dp.endpoint("default", "robovast", 9000), None);
}

fn scenario_pod(name: &str, secret: &str, result_bytes: Option<u64>) -> ResolvedPod {
    let main = container(
        "robovast",
        &[],
        &[("out", "/out", None)],
        &[
            ("S3_ENDPOINT", "http://robovast:9000"),
            ("S3_BUCKET", "run-7"),
            ("S3_PREFIX", "cfg-a/3"),
            ("S3_ACCESS_KEY", "minioadmin"),
            ("S3_SECRET_KEY", secret),
            ("TEST_ID", "cfg-a-3"),
        ],
    );
    let nav = container(
        "nav",
        &[],
        &[("out", "/out", None)],
        &[("CONTAINER_NAME", "nav")],
    );
    ResolvedPod {
        namespace: NS.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Default::default(),
        annotations: result_bytes
            .map(|b| {
                [(
                    vast_sim::dataplane::RESULT_BYTES_ANNOTATION.to_string(),
                    b.to_string(),
                )]
                .into()
            })
            .unwrap_or_default(),
        init_containers: vec![],
        containers: vec![main, nav],
        volumes: vec![vast_sim::pod::ResolvedVolume::EmptyDir { name: "out".into() }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_results_land_in_the_run_bucket() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let resolved = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = resolved.clone();
    sim.dp
        .set_service_resolver(std::sync::Arc::new(move |ns: &str, host: &str| {
            seen.lock().expect("lock").push(format!("{ns}/{host}"));
            (host == "robovast").then(|| "robovast".to_string())
        }));
    let s3 = s3_client(
        &format!("http://{}", sim.s3_direct("robovast")),
        "minioadmin",
    );

    // Missing bucket: no results (as `mc mirror` would fail).
    let pod = scenario_pod("job-a", "minioadmin", Some(10_000));
    sim.dp.pod_started(&pod).await.expect("start");
    assert!(sim
        .dp
        .write_scenario_results(&pod, PodOutcome::Succeeded)
        .await
        .is_err());

    s3.create_bucket()
        .bucket("run-7")
        .send()
        .await
        .expect("bucket");
    sim.dp
        .write_scenario_results(&pod, PodOutcome::Succeeded)
        .await
        .expect("results");
    let list = s3
        .list_objects_v2()
        .bucket("run-7")
        .send()
        .await
        .expect("list");
    let mut keys: Vec<(String, i64)> = list
        .contents()
        .iter()
        .map(|o| (o.key().unwrap_or("").to_string(), o.size().unwrap_or(0)))
        .collect();
    keys.sort();
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "cfg-a/3/logs/system.log",
            "cfg-a/3/logs/system_nav.log",
            "cfg-a/3/sysinfo.yaml",
            "cfg-a/3/test.xml"
        ]
    );
    assert_eq!(keys[0].1, 10_000);
    let xml = s3
        .get_object()
        .bucket("run-7")
        .key("cfg-a/3/test.xml")
        .send()
        .await
        .expect("get");
    let xml = String::from_utf8(xml.body.collect().await.expect("body").to_vec()).expect("utf8");
    assert!(
        xml.contains("failures=\"0\"") && xml.contains("cfg-a-3"),
        "{xml}"
    );
    assert!(resolved
        .lock()
        .expect("lock")
        .contains(&"default/robovast".to_string()));

    // A failed scenario reports a failure; the default size applies without the annotation.
    sim.dp.set_default_result_bytes(123);
    let failed = scenario_pod("job-b", "minioadmin", None);
    sim.dp
        .write_scenario_results(&failed, PodOutcome::Failed)
        .await
        .expect("results");
    let xml = s3
        .get_object()
        .bucket("run-7")
        .key("cfg-a/3/test.xml")
        .send()
        .await
        .expect("get");
    let xml = String::from_utf8(xml.body.collect().await.expect("body").to_vec()).expect("utf8");
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("<failure"),
        "{xml}"
    );
    let head = s3
        .head_object()
        .bucket("run-7")
        .key("cfg-a/3/logs/system.log")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(123));

    // Wrong credentials are rejected, and the error does not leak them.
    let bad = scenario_pod("job-c", "not-the-secret", None);
    let err = sim
        .dp
        .write_scenario_results(&bad, PodOutcome::Succeeded)
        .await
        .expect_err("bad keys");
    assert!(
        !err.to_string().contains("not-the-secret") && !err.to_string().contains("minioadmin"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_wipes_empty_dirs_only_when_asked_and_keeps_pvcs() {
    let sim = Sim::start().await;
    let pod = robovast_pod();
    sim.add(pod.clone()).await;
    let s3 = s3_client(
        &format!("http://{}", sim.s3_direct("robovast")),
        "minioadmin",
    );
    s3.create_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect("bucket");
    let keep = sim.dir.path().join("dp/pvcs/default/robovast-keep");
    std::fs::write(keep.join("kept.txt"), b"k").expect("write pvc");
    let addr = sim.s3_direct("robovast");

    sim.dp
        .pod_restarted(&pod, false)
        .await
        .expect("restart keep");
    assert_eq!(sim.s3_direct("robovast"), addr, "endpoint survives");
    s3.head_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect("bucket kept");

    sim.dp
        .pod_restarted(&pod, true)
        .await
        .expect("restart wipe");
    let err = s3
        .head_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect_err("bucket wiped with the emptyDir");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    assert!(keep.join("kept.txt").exists(), "PVC data kept");
    let scripts = sim
        .dir
        .path()
        .join("dp/pods/default/robovast/volumes/scripts/hello.sh");
    assert!(scripts.exists(), "configMap volume re-materialised");
    // The endpoint still works after the wipe.
    s3.create_bucket()
        .bucket("run-2")
        .send()
        .await
        .expect("bucket after wipe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_errors_are_seen_by_the_client() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let s3 = s3_client(
        &format!("http://{}", sim.s3_direct("robovast")),
        "minioadmin",
    );
    s3.create_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect("bucket");
    s3.put_object()
        .bucket("run-1")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .expect("put");
    sim.dp.faults.set(FaultConfig {
        seed: 1,
        s3: vec![S3FaultRule {
            ops: vec!["GetObject".into()],
            rate: 1.0,
            max_hits: Some(2),
            codes: vec![503, 500],
            latency_ms: None,
        }],
        ..Default::default()
    });
    let mut codes = Vec::new();
    for _ in 0..2 {
        let err = s3
            .get_object()
            .bucket("run-1")
            .key("k")
            .send()
            .await
            .expect_err("injected");
        codes.push(err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0));
    }
    codes.sort();
    assert!(codes.iter().all(|c| *c == 500 || *c == 503), "{codes:?}");
    // Other operations are unaffected, and after max_hits the GET works.
    s3.head_object()
        .bucket("run-1")
        .key("k")
        .send()
        .await
        .expect("head unaffected");
    s3.get_object()
        .bucket("run-1")
        .key("k")
        .send()
        .await
        .expect("get after max_hits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_portforward_stream_dropped_after_n_bytes() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let vol = sim
        .dir
        .path()
        .join("dp/pods/default/robovast/volumes/storage");
    let content = vec![b'x'; 1 << 20];
    std::fs::write(vol.join("big.tar.gz"), &content).expect("write");
    sim.dp.faults.set(FaultConfig {
        portforward: PortForwardFaults {
            drop_after_bytes: Some(100_000),
            ports: vec![80],
            max_hits: Some(1),
        },
        ..Default::default()
    });
    let local = forward(sim.pods_api(), "robovast", 80).await;
    // First stream: cut short.
    let mut s = tokio::net::TcpStream::connect(local)
        .await
        .expect("connect");
    s.write_all(b"GET /big.tar.gz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("stream ends");
    assert!(
        buf.len() <= 100_000,
        "at most the budget passes, got {}",
        buf.len()
    );
    assert!(buf.len() < content.len());
    // Second stream (max_hits reached): complete, and the client resumes with Range.
    let (code, _, body) = http_get(local, "/big.tar.gz", Some("bytes=50000-")).await;
    assert_eq!((code, body.len()), (206, content.len() - 50_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_latency_and_portforward_drop_seen_by_aws_sdk() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let direct = s3_client(
        &format!("http://{}", sim.s3_direct("robovast")),
        "minioadmin",
    );
    direct
        .create_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect("bucket");
    let data = vec![1u8; 1 << 20];
    direct
        .put_object()
        .bucket("run-1")
        .key("k")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");

    // Latency: a lower bound only (no upper bound on a loaded machine).
    sim.dp.faults.set(FaultConfig {
        s3: vec![S3FaultRule {
            ops: vec!["HeadObject".into()],
            rate: 1.0,
            max_hits: Some(1),
            codes: vec![],
            latency_ms: Some(300),
        }],
        ..Default::default()
    });
    let t = std::time::Instant::now();
    direct
        .head_object()
        .bucket("run-1")
        .key("k")
        .send()
        .await
        .expect("head");
    assert!(t.elapsed() >= Duration::from_millis(300));

    // A GET through a port-forward that is cut after 64 KiB fails; the next stream works.
    sim.dp.faults.set(FaultConfig {
        portforward: PortForwardFaults {
            drop_after_bytes: Some(64 * 1024),
            ports: vec![9000],
            max_hits: Some(1),
        },
        ..Default::default()
    });
    let local = forward(sim.pods_api(), "robovast", 9000).await;
    let pf = s3_client(&format!("http://{local}"), "minioadmin");
    let first = async {
        let out = pf
            .get_object()
            .bucket("run-1")
            .key("k")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        out.body
            .collect()
            .await
            .map(|b| b.into_bytes().len())
            .map_err(|e| e.to_string())
    }
    .await;
    assert!(
        first.is_err(),
        "the cut stream must surface as an error, got {first:?}"
    );
    let pf2 = s3_client(&format!("http://{local}"), "minioadmin");
    let body = pf2
        .get_object()
        .bucket("run-1")
        .key("k")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body");
    assert_eq!(body.into_bytes().len(), data.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_ends_when_the_process_exits_even_if_a_child_holds_stdout() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    // `sleep 60` inherits stdout; the exec must still end (and report success) long before.
    let run = exec(
        &sim,
        "archiver",
        &["sh", "-c", "sleep 60 & echo started"],
        None,
    );
    let (o, _, code) = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("exec ends");
    assert_eq!((o.as_str(), code), ("started\n", Some(0)));
    sim.dp
        .pod_deleted("default", "robovast")
        .await
        .expect("delete kills the sleeper");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portforward_two_ports_on_one_websocket() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let vol = sim
        .dir
        .path()
        .join("dp/pods/default/robovast/volumes/storage");
    std::fs::write(vol.join("index.html"), b"<h1>robovast</h1>").expect("write");
    let mut pf = sim
        .pods_api()
        .portforward("robovast", &[9000, 80])
        .await
        .expect("portforward");
    let mut s3 = pf.take_stream(9000).expect("stream 9000");
    let mut web = pf.take_stream(80).expect("stream 80");
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    web.write_all(get("/").as_bytes()).await.expect("write 80");
    s3.write_all(get("/minio/health/ready").as_bytes())
        .await
        .expect("write 9000");
    let (mut a, mut b) = (String::new(), String::new());
    let (ra, rb) = tokio::join!(web.read_to_string(&mut a), s3.read_to_string(&mut b));
    ra.expect("read 80");
    rb.expect("read 9000");
    assert!(
        a.starts_with("HTTP/1.1 200") && a.ends_with("<h1>robovast</h1>"),
        "{a}"
    );
    assert!(b.starts_with("HTTP/1.1 200"), "{b}");
    drop((s3, web));
    let _ = tokio::time::timeout(Duration::from_secs(30), pf.join())
        .await
        .expect("session ends");
    // Like the kubelet, the sim closes the websocket once every pod-side connection ended;
    // kube-rs may then report `SendAfterClosing` from its own close, which is harmless.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ranged_gets_through_separate_portforwards() {
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let direct = s3_client(
        &format!("http://{}", sim.s3_direct("robovast")),
        "minioadmin",
    );
    direct
        .create_bucket()
        .bucket("run-1")
        .send()
        .await
        .expect("bucket");
    let data: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    direct
        .put_object()
        .bucket("run-1")
        .key("big")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    let local = forward(sim.pods_api(), "robovast", 9000).await;
    let chunk = 1usize << 20;
    let gets = (0..8).map(|i| {
        // One client per chunk: each gets its own connection, so its own websocket.
        let s3 = s3_client(&format!("http://{local}"), "minioadmin");
        async move {
            let range = format!("bytes={}-{}", i * chunk, (i + 1) * chunk - 1);
            let out = s3
                .get_object()
                .bucket("run-1")
                .key("big")
                .range(range)
                .send()
                .await
                .expect("get");
            (i, out.body.collect().await.expect("body").into_bytes())
        }
    });
    for (i, body) in futures::future::join_all(gets).await {
        assert_eq!(&body[..], &data[i * chunk..(i + 1) * chunk], "chunk {i}");
    }
}
