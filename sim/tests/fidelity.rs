//! Fidelity suite: clients nobody here wrote (the real `kubectl`, the official Python
//! `kubernetes` client, boto3) against an in-process sim, asserting what a real cluster
//! answers (issue 14). Each test skips, saying why, when its client is not installed; CI
//! (`.ci/run`) installs all of them.

mod kube_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vast_sim::server::{Sim, SimHandle};

fn have(cmd: &str, arg: &str) -> bool {
    std::process::Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn have_kubectl() -> bool {
    let ok = have("kubectl", "version") || have("kubectl", "help");
    if !ok {
        eprintln!("skipped: kubectl is not installed (.ci/run installs it)");
    }
    ok
}

/// Whether `python3` can import `module`.
fn have_python(module: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with `{module}` is not installed (.ci/run pip-installs it)");
    }
    ok
}

fn clients_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fidelity/clients.py")
}

struct Cluster {
    sim: SimHandle,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let sim = Sim::start(Default::default()).await.expect("sim starts");
        let dir = tempfile::tempdir().expect("tempdir");
        sim.write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        Cluster { sim, dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn kubectl(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--request-timeout=30s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// (exit code, stdout, stderr)
    async fn try_run(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        kube_support::run_client(self.kubectl(args), stdin, Duration::from_secs(60)).await
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (code, out, err) = self.try_run(args, stdin).await;
        assert_eq!(code, 0, "kubectl {args:?}:\nstdout: {out}\nstderr: {err}");
        out
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.run(&all, None).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}): {out}"))
    }

    /// Polls `kubectl get -o json` until `done` holds (20 s at most).
    async fn until(&self, args: &[&str], what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let v = self.json(args).await;
            if done(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what} ({args:?})");
    }

    /// One raw HTTP/1.1 request to the API server: (status, body as JSON or string).
    async fn raw(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let url = self.sim.url();
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("write");
        s.write_all(body).await.expect("write body");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let (headers, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let payload = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        let v = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
        (status, v)
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

async fn python(args: &[&str]) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(clients_py())
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clients.py {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}"))
}

fn reasons(events: &Value, kind: &str, name_prefix: &str) -> Vec<String> {
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["involvedObject"]["kind"] == kind
                && e["involvedObject"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

/// Item 2: the official Python client's `list_node`/`read_node` deserialise (every
/// `NodeSystemInfo` field is required by its models).
#[tokio::test]
async fn python_client_reads_nodes() {
    if !have_python("kubernetes") {
        return;
    }
    let c = Cluster::start().await;
    let kc = c.kubeconfig();
    let out = python(&["nodes", kc.to_str().expect("utf-8 path")]).await;
    assert_eq!(out["nodes"], json!(["sim-node-0", "sim-node-1"]), "{out}");
    assert_eq!(out["kube_proxy_version"], "v1.33.0-vast-sim");
    assert!(out["machine_id"].as_str().is_some_and(|m| m.len() == 32));
}

/// Item 1 and the DELETE answers through the official Python client: `watch=True` sees
/// events, exec with `stdout=True` returns the output, delete gives a Status (a pod itself).
#[tokio::test]
async fn python_client_watch_exec_and_delete() {
    if !have_python("kubernetes") {
        return;
    }
    let c = Cluster::start().await;
    let kc = c.kubeconfig();
    let out = python(&["k8s", kc.to_str().expect("utf-8 path")]).await;
    assert!(out["watch"]
        .as_array()
        .expect("events")
        .contains(&json!(["ADDED", "py-watch"])));
    assert_eq!(out["exec"], "hello from exec\n");
    assert_eq!(out["delete_configmap"]["kind"], "Status", "{out}");
    assert_eq!(out["delete_configmap"]["status"], "Success");
    assert_eq!(out["delete_configmap"]["details"]["name"], "py-watch");
    assert_eq!(out["delete_configmap"]["details"]["kind"], "configmaps");
    assert_eq!(
        out["delete_pod_kind"], "Pod",
        "pods return the deleted object"
    );
}

/// Item 3: kubectl's generator subcommands send protobuf; the sim decodes them; other
/// protobuf bodies get 415 (or 400 when malformed).
#[tokio::test]
async fn kubectl_create_generators_send_protobuf() {
    if !have_kubectl() {
        return;
    }
    let c = Cluster::start().await;
    let out = c
        .run(
            &[
                "create",
                "secret",
                "generic",
                "creds",
                "--from-literal=password=s3cr3t",
                "--from-literal=user=me",
            ],
            None,
        )
        .await;
    assert_eq!(out.trim(), "secret/creds created");
    let s = c.json(&["get", "secret", "creds"]).await;
    assert_eq!(s["data"]["password"], "czNjcjN0");
    assert_eq!(s["data"]["user"], "bWU=");
    assert_eq!(s["type"], "Opaque");
    assert!(s["metadata"].get("generateName").is_none(), "{s}");
    c.run(&["create", "namespace", "team-a"], None).await;
    c.run(
        &[
            "create",
            "configmap",
            "cfg",
            "-n",
            "team-a",
            "--from-literal=a=b",
        ],
        None,
    )
    .await;
    let cm = c.json(&["get", "configmap", "cfg", "-n", "team-a"]).await;
    assert_eq!(cm["data"], json!({"a": "b"}));
    c.run(&["create", "serviceaccount", "robot", "-n", "team-a"], None)
        .await;
    let ns = c.json(&["get", "namespace", "team-a"]).await;
    assert_eq!(ns["status"]["phase"], "Active");
    // a kind without protobuf in the sim (a custom resource) and a broken body
    let ld = |n: u8, b: &[u8]| [&[n << 3 | 2, b.len() as u8][..], b].concat();
    let type_meta = [ld(1, b"kueue.x-k8s.io/v1beta2"), ld(2, b"Workload")].concat();
    let body = [b"k8s\0".to_vec(), ld(1, &type_meta), ld(2, b"")].concat();
    let (code, st) = c
        .raw(
            "POST",
            "/apis/kueue.x-k8s.io/v1beta2/namespaces/default/workloads",
            "application/vnd.kubernetes.protobuf",
            &body,
        )
        .await;
    assert_eq!(
        (code, &st["reason"]),
        (415, &json!("UnsupportedMediaType")),
        "{st}"
    );
    let (code, st) = c
        .raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/vnd.kubernetes.protobuf",
            b"k8s\0\x0a\x05\x01",
        )
        .await;
    assert_eq!((code, &st["kind"]), (400, &json!("Status")), "{st}");
}

/// Item 4: `kubectl diff` of objects as they are is empty (exit 0), client- and server-side.
#[tokio::test]
async fn kubectl_diff_of_unchanged_objects_is_empty() {
    if !have_kubectl() {
        return;
    }
    let c = Cluster::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: \"1\"\n";
    c.run(&["create", "-f", "-"], Some(cm)).await;
    let path = c.dir.path().join("objs.yaml");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: nginx:1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n";
    std::fs::write(&path, format!("{cm}---\n{pod}")).expect("write");
    c.run(&["apply", "-f", path.to_str().expect("utf-8")], None)
        .await;
    for extra in [&[][..], &["--server-side"][..]] {
        let mut args = vec!["diff", "-f", path.to_str().expect("utf-8")];
        args.extend(extra);
        let (code, out, err) = c.try_run(&args, None).await;
        assert_eq!((code, out.as_str()), (0, ""), "kubectl {args:?}: {err}");
    }
}

/// Item 5: merge patch with a non-object body is 400, strategic merge on a custom resource
/// 415, DELETE answers as the generic registry, log container errors 400.
#[tokio::test]
async fn patch_delete_and_log_answers() {
    if !have_kubectl() {
        return;
    }
    let c = Cluster::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\ndata:\n  a: b\n";
    c.run(&["create", "-f", "-"], Some(cm)).await;
    let (code, st) = c
        .raw(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/p",
            "application/merge-patch+json",
            b"[1,2]",
        )
        .await;
    assert_eq!((code, &st["reason"]), (400, &json!("BadRequest")), "{st}");
    let lq = "apiVersion: kueue.x-k8s.io/v1beta2\nkind: LocalQueue\nmetadata:\n  name: q\nspec:\n  clusterQueue: cq\n";
    c.run(&["create", "-f", "-"], Some(lq)).await;
    let (code, st) = c
        .raw(
            "PATCH",
            "/apis/kueue.x-k8s.io/v1beta2/namespaces/default/localqueues/q",
            "application/strategic-merge-patch+json",
            br#"{"metadata":{"labels":{"a":"b"}}}"#,
        )
        .await;
    assert_eq!(
        (code, &st["reason"]),
        (415, &json!("UnsupportedMediaType")),
        "{st}"
    );
    // kubectl patch on a custom resource falls back to a merge patch only when asked
    let (code, _, err) = c
        .try_run(
            &[
                "patch",
                "localqueue",
                "q",
                "-p",
                r#"{"metadata":{"labels":{"a":"b"}}}"#,
            ],
            None,
        )
        .await;
    assert!(
        code != 0 && err.contains("application/strategic-merge-patch+json"),
        "{err}"
    );
    c.run(
        &[
            "patch",
            "localqueue",
            "q",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"a":"b"}}}"#,
        ],
        None,
    )
    .await;
    let (code, st) = c
        .raw(
            "DELETE",
            "/api/v1/namespaces/default/configmaps/p",
            "application/json",
            b"",
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        (&st["kind"], &st["status"]),
        (&json!("Status"), &json!("Success")),
        "{st}"
    );
    assert_eq!(st["details"]["name"], "p");
    assert!(st["details"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let (code, st) = c
        .raw(
            "DELETE",
            "/apis/kueue.x-k8s.io/v1beta2/namespaces/default/localqueues/q",
            "application/json",
            b"",
        )
        .await;
    assert_eq!((code, &st["kind"]), (200, &json!("Status")), "{st}");
    assert_eq!(st["details"]["group"], "kueue.x-k8s.io");
    // a finalizer keeps the object: the object itself is the answer
    let fin = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  finalizers: [example.com/keep]\n";
    c.run(&["create", "-f", "-"], Some(fin)).await;
    let (_, obj) = c
        .raw(
            "DELETE",
            "/api/v1/namespaces/default/configmaps/kept",
            "application/json",
            b"",
        )
        .await;
    assert_eq!(obj["kind"], "ConfigMap", "{obj}");
    assert!(obj["metadata"]["deletionTimestamp"].is_string());
    // logs: unknown container, missing container on a two-container pod
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  containers:\n  - {name: a, image: x}\n  - {name: b, image: x}\n";
    c.run(&["create", "-f", "-"], Some(pod)).await;
    let (code, _, err) = c.try_run(&["logs", "two", "-c", "zz"], None).await;
    assert!(
        code != 0 && err.contains("container zz is not valid for pod two"),
        "{err}"
    );
    let (code, st) = c
        .raw(
            "GET",
            "/api/v1/namespaces/default/pods/two/log",
            "application/json",
            b"",
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        st["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    let deleted = c.run(&["delete", "pod", "two"], None).await;
    assert_eq!(deleted.trim(), "pod \"two\" deleted");
}

/// Item 6: auth can-i, get all, endpoints, leases, default ServiceAccounts, explain.
#[tokio::test]
async fn kubectl_can_i_get_all_endpoints_leases_serviceaccounts_explain() {
    if !have_kubectl() {
        return;
    }
    let c = Cluster::start().await;
    assert_eq!(
        c.run(&["auth", "can-i", "create", "pods"], None)
            .await
            .trim(),
        "yes"
    );
    assert_eq!(
        c.run(
            &["auth", "can-i", "delete", "jobs.batch", "-n", "kube-system"],
            None
        )
        .await
        .trim(),
        "yes"
    );
    let objs = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: nginx:1\n    ports: [{containerPort: 8080, name: http}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http, name: web}]\n";
    c.run(&["apply", "-f", "-"], Some(objs)).await;
    let all = c.run(&["get", "all", "-o", "name"], None).await;
    for want in ["pod/web", "service/web", "service/kubernetes"] {
        assert!(all.lines().any(|l| l == want), "{want} not in {all}");
    }
    let ep = c
        .until(&["get", "endpoints", "web"], "ready endpoints", |e| {
            e.pointer("/subsets/0/addresses/0/ip").is_some()
        })
        .await;
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080, "{ep}");
    assert_eq!(ep["subsets"][0]["addresses"][0]["targetRef"]["name"], "web");
    let api = c.json(&["get", "endpoints", "kubernetes"]).await;
    let url = c.sim.url();
    let port = url.trim_end_matches('/').rsplit(':').next().expect("port");
    assert_eq!(
        api["subsets"][0]["ports"][0]["port"].to_string(),
        port,
        "{api}"
    );
    let lease = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: leader\nspec:\n  holderIdentity: me\n  leaseDurationSeconds: 15\n";
    c.run(&["apply", "-f", "-"], Some(lease)).await;
    let l = c.json(&["get", "lease", "leader"]).await;
    assert_eq!(l["spec"]["holderIdentity"], "me");
    c.run(&["create", "namespace", "fresh"], None).await;
    c.until(
        &["get", "serviceaccounts", "-n", "fresh"],
        "default SA",
        |l| {
            l["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|sa| sa["metadata"]["name"] == "default"))
        },
    )
    .await;
    let explained = c.run(&["explain", "pods"], None).await;
    assert!(explained.contains("KIND:       Pod"), "{explained}");
    assert!(explained.contains("metadata\t<ObjectMeta>"), "{explained}");
    let labels = c
        .run(&["explain", "configmaps.metadata.labels"], None)
        .await;
    assert!(labels.contains("map[string]string"), "{labels}");
    let wl = c.run(&["explain", "workloads"], None).await;
    assert!(wl.contains("GROUP:      kueue.x-k8s.io"), "{wl}");
    let (code, _, err) = c.try_run(&["explain", "pods.spec.nosuchfield"], None).await;
    assert!(code != 0 && err.contains("does not exist"), "{err}");
    // the sim's apply still works with the schemas there (no strategic merge meta from them)
    let changed = objs.replace("nginx:1", "nginx:2");
    let (code, out, err) = c.try_run(&["apply", "-f", "-"], Some(&changed)).await;
    assert!(
        code == 0 && out.contains("pod/web configured") && !err.contains("warning"),
        "{out}{err}"
    );
}

fn scenario_job(name: &str, ms: u64, extra_env: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  labels: {{kueue.x-k8s.io/queue-name: robovast}}
  annotations: {{sim.vast.dev/duration-ms: "{ms}"}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: robovast
        image: scenario:1
        env:
        - {{name: TEST_ID, value: {name}-t0}}
        - {{name: SPEED, value: "3"}}
        - {{name: S3_SECRET_KEY, value: hidden}}
{extra_env}        resources: {{requests: {{cpu: "1", memory: 1Gi}}}}
"#
    )
}

const QUEUE: &str = r#"apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {name: default-flavor}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {name: cq}
spec:
  namespaceSelector: {}
  resourceGroups:
  - coveredResources: [cpu, memory]
    flavors:
    - name: default-flavor
      resources: [{name: cpu, nominalQuota: 1}, {name: memory, nominalQuota: 4Gi}]
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata: {name: robovast, namespace: default}
spec: {clusterQueue: cq}
"#;

/// Item 7: logs that grow while the pod runs (`logs -f` streams and ends with the
/// container), `Init:Error` for a failed init container, Events of the scheduler, kubelet,
/// job controller and Kueue.
#[tokio::test]
async fn logs_follow_init_error_and_events() {
    if !have_kubectl() {
        return;
    }
    let c = Cluster::start().await;
    c.run(&["apply", "-f", "-"], Some(QUEUE)).await;
    c.run(
        &["create", "-f", "-"],
        Some(&scenario_job("slow", 4000, "")),
    )
    .await;
    // a second Job waits for quota: Kueue's Pending event
    c.run(
        &["create", "-f", "-"],
        Some(&scenario_job("queued", 100, "")),
    )
    .await;
    let pods = c
        .until(
            &["get", "pods", "-l", "job-name=slow"],
            "running pod",
            |l| l.pointer("/items/0/status/phase") == Some(&json!("Running")),
        )
        .await;
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let started = std::time::Instant::now();
    let mut follow = c.kubectl(&["logs", "-f", &pod]).spawn().expect("kubectl");
    let stdout = follow.stdout.take().expect("stdout");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("first line in time")
        .expect("read")
        .expect("a line");
    assert_eq!(first, "vast-sim: starting scenario slow-t0");
    let params = lines.next_line().await.expect("read").expect("line");
    assert!(
        params.contains("SPEED=3") && !params.contains("hidden"),
        "{params}"
    );
    let mut rest = Vec::new();
    while let Some(l) = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("follow ends when the container ends")
        .expect("read")
    {
        rest.push(l);
    }
    assert_eq!(rest, ["vast-sim: scenario finished: succeeded"]);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "followed while running"
    );
    let status = follow.wait().await.expect("kubectl logs exits");
    assert!(status.success());
    let logs = c.run(&["logs", &pod, "--tail=1"], None).await;
    assert_eq!(logs, "vast-sim: scenario finished: succeeded\n");

    // a scenario pod whose S3 does not exist: its init container fails
    let init_env = "        - {name: S3_BUCKET, value: run-x}\n        - {name: S3_ENDPOINT, value: \"http://robovast:9000\"}\n";
    let failing = scenario_job("broken", 100, init_env).replace(
        "      containers:\n",
        "      initContainers:\n      - name: s3-init\n        image: init:1\n        env:\n        - {name: S3_BUCKET, value: run-x}\n        - {name: S3_ENDPOINT, value: \"http://robovast:9000\"}\n      containers:\n",
    );
    c.run(&["create", "-f", "-"], Some(&failing)).await;
    c.until(&["get", "jobs", "broken"], "broken Job failed", |j| {
        j["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Failed"))
    })
    .await;
    let table = c.run(&["get", "pods", "-l", "job-name=broken"], None).await;
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[1..3], ["0/1", "Init:Error"], "{table}");

    c.until(&["get", "jobs", "queued"], "queued Job done", |j| {
        j["status"]["succeeded"] == 1
    })
    .await;
    let events = c.json(&["get", "events"]).await;
    let pod_reasons = reasons(&events, "Pod", "slow-");
    for want in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            pod_reasons.iter().any(|r| r == want),
            "{want}: {pod_reasons:?}"
        );
    }
    let job_reasons = reasons(&events, "Job", "slow");
    for want in [
        "CreatedWorkload",
        "Started",
        "SuccessfulCreate",
        "Completed",
    ] {
        assert!(
            job_reasons.iter().any(|r| r == want),
            "{want}: {job_reasons:?}"
        );
    }
    let failed = reasons(&events, "Job", "broken");
    assert!(
        failed.iter().any(|r| r == "BackoffLimitExceeded"),
        "{failed:?}"
    );
    let wl = reasons(&events, "Workload", "job-slow-");
    for want in ["QuotaReserved", "Admitted"] {
        assert!(wl.iter().any(|r| r == want), "{want}: {wl:?}");
    }
    let pending = reasons(&events, "Workload", "job-queued-");
    assert!(pending.iter().any(|r| r == "Pending"), "{pending:?}");
    let listed = c
        .run(&["events", "--for", &format!("pod/{pod}")], None)
        .await;
    assert!(
        listed.contains("Scheduled") && listed.contains("Started"),
        "{listed}"
    );
    let describe = c.run(&["describe", "pod", &pod], None).await;
    let section = describe.split("Events:").nth(1).unwrap_or("");
    assert!(
        section.contains("Scheduled") && section.contains("Successfully assigned default/"),
        "{describe}"
    );
    // events go with their object
    c.run(&["delete", "job", "slow", "--cascade=foreground"], None)
        .await;
    c.until(&["get", "events"], "events of deleted pods pruned", |e| {
        reasons(e, "Pod", "slow-").is_empty() && reasons(e, "Job", "slow").is_empty()
    })
    .await;
}

/// Item 8: boto3 against the sim's MinIO: re-creating an owned bucket, conditional GETs,
/// `partNumber` GETs.
#[tokio::test]
async fn boto3_bucket_conditions_and_parts() {
    if !have_python("boto3") {
        return;
    }
    let sim = support::Sim::start().await;
    sim.add(support::robovast_pod()).await;
    let endpoint = format!("http://{}", sim.s3_direct("robovast"));
    let out = python(&["s3", &endpoint]).await;
    assert_eq!(
        out["recreate"],
        json!(["BucketAlreadyOwnedByYou", 409]),
        "{out}"
    );
    assert_eq!(out["if_match_ok"], "0123456789");
    assert_eq!(out["if_match_bad"], json!(["PreconditionFailed", 412]));
    assert_eq!(out["if_none_match"], json!(["304", 304]));
    assert_eq!(out["if_none_match_other"], "0123456789");
    assert_eq!(out["if_modified_since"], json!(["304", 304]));
    assert_eq!(out["if_modified_since_old"], "0123456789");
    assert_eq!(
        out["if_unmodified_since"],
        json!(["PreconditionFailed", 412])
    );
    let total = (5 << 20) + 3;
    assert_eq!(
        out["part2"],
        json!({"body": "xyz", "parts_count": 2, "status": 206,
               "content_range": format!("bytes {}-{}/{total}", 5 << 20, total - 1)})
    );
    assert_eq!(out["part1_len"], 5 << 20);
    assert_eq!(out["part3"], json!(["InvalidPartNumber", 416]));
}
