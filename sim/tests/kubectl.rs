//! The real `kubectl` against the sim: api-resources, get, apply -f, create, label, wait,
//! get -w, delete, apply --server-side; outputs parsed and asserted.

mod kube_support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use vast_sim::server::{Sim, SimHandle};

struct Kubectl {
    _sim: SimHandle,
    dir: tempfile::TempDir,
}

impl Kubectl {
    async fn start() -> Self {
        let sim = Sim::start(Default::default()).await.expect("sim starts");
        let dir = tempfile::tempdir().expect("tempdir");
        sim.write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        Kubectl { _sim: sim, dir }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.env("KUBECONFIG", self.dir.path().join("kubeconfig"))
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

    /// Runs kubectl, optionally feeding stdin; fails the test on a non-zero exit.
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.try_run(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    }

    async fn try_run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let (code, out, err) =
            kube_support::run_client(self.command(args), stdin, Duration::from_secs(90)).await;
        (code == 0, out, err)
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.run(&all, None).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {args:?} printed no JSON ({e}): {out}"))
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

const QUEUES: &str = r#"
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata:
  name: default-flavor
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata:
  name: robovast-cluster-queue
spec:
  namespaceSelector: {}
  resourceGroups:
  - coveredResources: ["cpu", "memory"]
    flavors:
    - name: default-flavor
      resources:
      - name: cpu
        nominalQuota: 4
      - name: memory
        nominalQuota: 16Gi
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata:
  name: robovast
  namespace: default
spec:
  clusterQueue: robovast-cluster-queue
"#;

fn job_yaml(name: &str, duration_ms: u64) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  labels:
    jobgroup: scenario-runs
    kueue.x-k8s.io/queue-name: robovast
  annotations:
    sim.vast.dev/duration-ms: "{duration_ms}"
spec:
  backoffLimit: 0
  ttlSecondsAfterFinished: 600
  template:
    metadata:
      labels:
        jobgroup: scenario-runs
    spec:
      restartPolicy: Never
      containers:
      - name: robovast
        image: scenario:latest
        resources:
          requests: {{cpu: "1", memory: 1Gi}}
          limits: {{cpu: "1", memory: 1Gi}}
"#
    )
}

#[tokio::test]
async fn api_resources_lists_builtin_and_kueue_kinds() {
    let k = Kubectl::start().await;
    let out = k
        .run(&["api-resources", "--no-headers", "-o", "name"], None)
        .await;
    let names: Vec<&str> = out.lines().collect();
    for want in [
        "pods",
        "jobs.batch",
        "workloads.kueue.x-k8s.io",
        "clusterqueues.kueue.x-k8s.io",
        "localqueues.kueue.x-k8s.io",
        "resourceflavors.kueue.x-k8s.io",
        "customresourcedefinitions.apiextensions.k8s.io",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let version = k.json(&["version"]).await;
    assert_eq!(version["serverVersion"]["major"], "1");
    let crd_wait = k
        .run(
            &[
                "wait",
                "--for=condition=established",
                "crd/resourceflavors.kueue.x-k8s.io",
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert!(crd_wait.contains("condition met"), "{crd_wait}");
}

#[tokio::test]
async fn get_nodes_and_namespaces() {
    let k = Kubectl::start().await;
    let nodes = k.json(&["get", "nodes"]).await;
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["status"]["allocatable"]["cpu"], "16");
    let names = k.run(&["get", "namespaces", "-o", "name"], None).await;
    assert!(
        names.lines().any(|l| l == "namespace/kueue-system"),
        "{names}"
    );
    let (ok, _, err) = k.try_run(&["get", "pod", "missing"], None).await;
    assert!(!ok && err.contains("NotFound"), "{err}");
    // generator subcommands send protobuf, which the sim decodes
    let out = k
        .run(&["create", "configmap", "x", "--from-literal=a=b"], None)
        .await;
    assert_eq!(out.trim(), "configmap/x created");
}

#[tokio::test]
async fn apply_create_label_wait_delete_a_queued_job() {
    let k = Kubectl::start().await;
    let first = k.run(&["apply", "-f", "-"], Some(QUEUES)).await;
    assert!(
        first.contains("clusterqueue.kueue.x-k8s.io/robovast-cluster-queue created"),
        "{first}"
    );
    let again = k.run(&["apply", "-f", "-"], Some(QUEUES)).await;
    assert!(
        again.contains("clusterqueue.kueue.x-k8s.io/robovast-cluster-queue unchanged"),
        "{again}"
    );

    std::fs::write(k.path("job.yaml"), job_yaml("sc-0", 300)).unwrap();
    let created = k
        .run(
            &["create", "-f", k.path("job.yaml").to_str().unwrap()],
            None,
        )
        .await;
    assert_eq!(created.trim(), "job.batch/sc-0 created");
    let (ok, _, err) = k
        .try_run(
            &["create", "-f", k.path("job.yaml").to_str().unwrap()],
            None,
        )
        .await;
    assert!(!ok && err.contains("AlreadyExists"), "{err}");

    let labeled = k.run(&["label", "job", "sc-0", "run-id=run-1"], None).await;
    assert_eq!(labeled.trim(), "job.batch/sc-0 labeled");
    let by_label = k
        .run(
            &[
                "get",
                "jobs",
                "-l",
                "jobgroup=scenario-runs,run-id=run-1",
                "-o",
                "name",
            ],
            None,
        )
        .await;
    assert_eq!(by_label.trim(), "job.batch/sc-0");

    let waited = k
        .run(
            &[
                "wait",
                "--for=condition=complete",
                "job/sc-0",
                "--timeout=60s",
            ],
            None,
        )
        .await;
    assert_eq!(waited.trim(), "job.batch/sc-0 condition met");
    // server-side printing: kubectl's usual columns
    let table = k.run(&["get", "jobs"], None).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["sc-0", "Complete", "1/1"], "{table}");
    let job = k.json(&["get", "job", "sc-0"]).await;
    assert_eq!(job["status"]["succeeded"], 1);
    let wl = k
        .run(
            &[
                "get",
                "workloads",
                "-l",
                "kueue.x-k8s.io/queue-name=robovast",
                "-o",
                "name",
            ],
            None,
        )
        .await;
    assert!(
        wl.trim().starts_with("workload.kueue.x-k8s.io/job-sc-0-"),
        "{wl}"
    );

    let deleted = k.run(&["delete", "job", "sc-0"], None).await;
    assert_eq!(deleted.trim(), "job.batch \"sc-0\" deleted");
    let pods = k
        .run(&["get", "pods", "-l", "job-name=sc-0", "-o", "name"], None)
        .await;
    let remaining = pods.trim();
    // kubectl deletes with Background propagation: the GC removes the pod soon
    if !remaining.is_empty() {
        k.run(
            &[
                "wait",
                "--for=delete",
                "pod",
                "-l",
                "job-name=sc-0",
                "--timeout=60s",
            ],
            None,
        )
        .await;
    }
}

#[tokio::test]
async fn get_watch_prints_events() {
    let k = Kubectl::start().await;
    let mut child = k
        .command(&["get", "configmaps", "-w", "-o", "name"])
        .spawn()
        .expect("kubectl");
    let stdout = child.stdout.take().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // give the watch a moment to start, then cause events
    let k2 = &k;
    let producer = async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for name in ["w-a", "w-b", "w-c"] {
            let cm = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n"
            );
            k2.run(&["create", "-f", "-"], Some(&cm)).await;
        }
    };
    let consumer = async {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("watch output in time")
                .unwrap()
                .expect("watch still open");
            if line.starts_with("configmap/w-") && !seen.contains(&line) {
                seen.push(line);
            }
        }
        seen
    };
    let (_, seen) = tokio::join!(producer, consumer);
    assert_eq!(seen, ["configmap/w-a", "configmap/w-b", "configmap/w-c"]);
    let _ = child.kill().await;
}

#[tokio::test]
async fn apply_server_side_and_conflicts() {
    let k = Kubectl::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n";
    let out = k
        .run(&["apply", "--server-side", "-f", "-"], Some(cm))
        .await;
    assert_eq!(out.trim(), "configmap/ssa serverside-applied");
    let obj = k
        .json(&["get", "configmap", "ssa", "--show-managed-fields"])
        .await;
    assert_eq!(obj["metadata"]["managedFields"][0]["manager"], "kubectl");
    let changed = cm.replace("\"1\"", "\"2\"");
    let (ok, _, err) = k
        .try_run(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&changed),
        )
        .await;
    assert!(!ok && err.contains("conflict"), "{err}");
    k.run(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&changed),
    )
    .await;
    let obj = k.json(&["get", "configmap", "ssa"]).await;
    assert_eq!(obj["data"]["a"], "2");
    // a client-side apply of a pod, then a change to it (strategic merge patch)
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {role: robovast}\nspec:\n  containers:\n  - name: c\n    image: nginx:1\n";
    k.run(&["apply", "-f", "-"], Some(pod)).await;
    let out = k
        .run(
            &["apply", "-f", "-"],
            Some(&pod.replace("nginx:1", "nginx:2")),
        )
        .await;
    assert_eq!(out.trim(), "pod/web configured");
    let obj = k.json(&["get", "pod", "web"]).await;
    assert_eq!(obj["spec"]["containers"][0]["image"], "nginx:2");
    assert!(Path::new(&k.path("kubeconfig")).exists());
}
