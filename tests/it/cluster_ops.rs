//! The cluster commands end to end with the real binary against vast-sim: every command's
//! happy path and its documented error messages.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use vast_sim::config::SimConfig;

use super::cluster_support::{run_id_of, start, text, NS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_run_monitor_run_cleanup_cleanup_happy_path() {
    let c = start(SimConfig::default()).await;
    let out = c.vast(&["execution", "cluster", "setup", "rke2"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "✓ Cluster setup completed successfully!\n"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("Kueue is already installed (its CRDs are present): installation skipped."),
        "{err}"
    );
    let w = c.world().await;
    assert_eq!(w.robovast_pod.as_deref(), Some("Running"));
    assert!(
        w.service && w.secret && w.cluster_queue && w.local_queue,
        "{w:?}"
    );
    assert!(c
        .project
        .join(".robovast_cluster_config.vast-sim")
        .is_file());

    // Setup again without --force: upstream's refusal, exit 1, nothing changed.
    let out = c.vast(&["execution", "cluster", "setup", "rke2"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Error: Cluster is already set up with 'rke2' config.\nRun 'vast execution cluster cleanup' first to clean up the existing setup."), "{}", text(&out.stderr));
    // --force re-applies: the robovast pod is re-created.
    let uid = |p: Option<k8s_openapi::api::core::v1::Pod>| p.and_then(|p| p.metadata.uid);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.client(), NS);
    let before = uid(pods.get_opt("robovast").await.unwrap());
    let out = c
        .vast(&["execution", "cluster", "setup", "rke2", "--force"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = uid(pods.get_opt("robovast").await.unwrap());
    assert_ne!(before, after, "--force re-creates the robovast pod");

    // A detached run: upstream's output, 15 Jobs labelled with the run id.
    let out = c.vast(&["execution", "cluster", "run"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let id = run_id_of(&stdout);
    assert!(
        stdout.starts_with(
            "Checking Kubernetes cluster access...\nChecking robovast pod status...\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\n\nJobs are now running in detached mode.\n\nTo check job status, use: vast execution cluster monitor\nTo clean up jobs, use: vast execution cluster run-cleanup\n"), "{stdout}");
    let w = c.world().await;
    assert_eq!(w.jobs[&id].len(), 15, "{w:?}");
    let bucket = c.bucket(&id).await;
    for key in [
        "entrypoint.sh",
        "scenario.osc",
        "execution.yaml",
        "_config/configurations.yaml",
    ] {
        assert!(bucket.contains_key(key), "{key} in {:?}", bucket.keys());
    }
    c.wait_jobs_done(&id, 60).await;

    // monitor --once: one line for the run, all done.
    let out = c.vast(&["execution", "cluster", "monitor", "--once"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = text(&out.stdout);
    assert!(
        m.contains(&format!(
            "{id}  [████████████████████]   100.0%  15/15  (15 ok, 0 fail)  Running: 0  Pending: 0"
        )),
        "{m}"
    );
    let out = c
        .vast(&["execution", "cluster", "monitor", "--once", "--json"])
        .await;
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["contexts"][0]["runs"][0]["ok"], 15, "{j}");

    // run-cleanup of an unknown run: upstream's message and the available ids.
    let out = c
        .vast(&[
            "execution",
            "cluster",
            "run-cleanup",
            "--run-id",
            "run-nope",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("Run 'run-nope' not found in cluster.\nAvailable run-ids:\n  - ")
            && e.contains(&id),
        "{e}"
    );
    let out = c
        .vast(&["execution", "cluster", "run-cleanup", "--run-id", &id])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("Cleaning up jobs and pods for run '{id}'...\n")));
    assert!(text(&out.stdout).ends_with("✓ Cleanup completed successfully!\n"));
    assert!(c.world().await.jobs.is_empty());
    // The record still counts the run after its Jobs are gone.
    let out = c.vast(&["execution", "cluster", "monitor", "--once"]).await;
    assert!(
        text(&out.stdout).contains("15/15  (15 ok, 0 fail)"),
        "{}",
        text(&out.stdout)
    );

    // cleanup: everything setup made is gone, the saved setup too, the queue not stopped.
    // Without a terminal it does not ask, and says which results were never downloaded.
    let out = c.vast(&["execution", "cluster", "cleanup"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Removed the results of 1 run that were never downloaded: {id}\n✓ Cluster cleanup completed successfully!\n")
    );
    let w = c.world().await;
    assert_eq!(w.robovast_pod, None);
    assert!(
        !w.service && !w.secret && !w.cluster_queue && !w.local_queue,
        "{w:?}"
    );
    assert!(!c.project.join(".robovast_cluster_config.vast-sim").exists());
    // cleanup again: idempotent (nothing to delete, still success).
    let out = c
        .vast(&[
            "execution",
            "cluster",
            "cleanup",
            "--cluster-config",
            "rke2",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follow_prints_statistics_and_survives_ttl_deletion_and_compaction() {
    let c = start(SimConfig::default()).await;
    c.setup_cli("minikube").await;
    // Delete every finished Job of the run as soon as it is seen finished, as the TTL
    // controller would: --follow must count them from what it observed, never crash on 404.
    let client = c.client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let sim_addr = c.sim.addr();
    let reaper = tokio::spawn(async move {
        let jobs: Api<Job> = Api::namespaced(client, NS);
        let mut compacted = false;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if !compacted {
                // Once: an etcd compaction, so the follower's watch gets a 410 and re-lists.
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut s = tokio::net::TcpStream::connect(sim_addr).await.unwrap();
                s.write_all(b"POST /sim/compact HTTP/1.1\r\nHost: sim\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await.unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.unwrap();
                compacted = true;
            }
            if let Ok(list) = jobs
                .list(&ListParams::default().labels("jobgroup=scenario-runs"))
                .await
            {
                for j in list.items {
                    if j.status
                        .as_ref()
                        .and_then(|s| s.completion_time.as_ref())
                        .is_some()
                    {
                        // Leave a moment for the follower to see it finished (TTL is 60 s in
                        // reality); some are deleted before any poll saw them.
                        let _ = jobs
                            .delete(j.metadata.name.as_deref().unwrap(), &Default::default())
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });
    let out = c
        .vast(&["execution", "cluster", "run", "--follow", "-r", "2"])
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reaper.await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("RUN STATISTICS"), "{stdout}");
    assert!(stdout.contains("Jobs: 10 total, "), "{stdout}");
    assert!(stdout.ends_with("Cluster execution finished.\n\nYou can now download the results using:\n\n  vast execution cluster download\n\n"), "{stdout}");
    let err = text(&out.stderr);
    assert!(
        err.contains("All 10 jobs created. Starting execution...")
            && err.contains("All jobs finished."),
        "{err}"
    );
    // Nothing was guessed: ok + fail + unknown = total.
    let line = stdout.lines().find(|l| l.starts_with("Jobs: ")).unwrap();
    let n: Vec<u64> = line
        .split(|ch: char| !ch.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    let unknown = n.get(3).copied().unwrap_or(0);
    assert_eq!(n[1] + n[2] + unknown, 10, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_errors() {
    let c = start(SimConfig::default()).await;
    let cases: &[(&[&str], i32, &str)] = &[
        (&["execution", "cluster", "setup"], 2, "Error: CLUSTER_CONFIG argument is required when not using --list"),
        (&["execution", "cluster", "setup", "nope"], 2, "Error: Cluster config 'nope' not found. Available configs: azure, gcp, minikube, rke2"),
        (&["execution", "cluster", "setup", "rke2", "-o", "oops"], 2, "Error: Invalid option format 'oops'. Expected key=value"),
        (&["execution", "cluster", "setup", "rke2", "-x", "no-such-ctx"], 2, "no-such-ctx"),
        (&["execution", "cluster", "cleanup"], 2, "Error: No cluster config specified and no saved config found. Use --cluster-config <name> to select a config, or run setup first."),
        (&["execution", "cluster", "run", "-r", "0"], 2, "Error: --runs must be at least 1 (got 0)"),
        (&["execution", "cluster", "run", "-c", "nope"], 2, "Error: Config 'nope' not found (see available configs above)"),
    ];
    for (args, code, msg) in cases {
        let out = c.vast(args).await;
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(msg),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = c.vast(&["execution", "cluster", "setup", "--list"]).await;
    assert_eq!(
        text(&out.stdout),
        "Available cluster configurations:\n  - azure\n  - gcp\n  - minikube\n  - rke2\n"
    );

    // No robovast pod (no setup yet): upstream's block, exit 1.
    let out = c.vast(&["execution", "cluster", "run"]).await;
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(e.contains("✗ Error: Pod 'robovast' does not exist\nTo set up the cluster.\n  vast execution cluster setup <cluster-config>"), "{e}");

    // A pod but no saved setup.
    c.setup_cli("rke2").await;
    std::fs::remove_file(c.project.join(".robovast_cluster_config.vast-sim")).unwrap();
    let out = c.vast(&["execution", "cluster", "run"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("✗ Error: Failed to get cluster config: No cluster config specified and no saved config found."), "{}", text(&out.stderr));

    // No cluster: the kubeconfig points at a closed port.
    let dead = c.tmp.path().join("dead-kubeconfig");
    std::fs::write(
        &dead,
        vast_sim::server::kubeconfig_yaml("http://127.0.0.1:9", NS),
    )
    .unwrap();
    let out = c
        .command(&["execution", "cluster", "run"])
        .env("KUBECONFIG", &dead)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("✗ Error: Failed to check Kubernetes access: ")
            && e.contains("  Kubernetes cluster is required for RoboVAST execution."),
        "{e}"
    );
    let out = c
        .command(&["execution", "cluster", "run-cleanup"])
        .env("KUBECONFIG", &dead)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("✗ Error: Failed to check Kubernetes access: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_shows_why_jobs_are_pending_and_their_queue_position() {
    let mut cfg = SimConfig::default();
    cfg.nodes.count = 1;
    cfg.nodes.cpu = "4".into();
    cfg.pods.job_duration_ms = 120_000;
    let c = start(cfg).await;
    c.setup_cli("rke2").await;
    let out = c.vast(&["execution", "cluster", "run"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = run_id_of(&text(&out.stdout));
    // The quota (4 CPU, 1 CPU per Job) admits 4 of the 15 Jobs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let j = loop {
        let out = c
            .vast(&["execution", "cluster", "monitor", "--once", "--json"])
            .await;
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = &j["contexts"][0]["runs"][0];
        if r["running"] == 4 && r["pending_jobs"][0]["position"] == 1 {
            break j;
        }
        assert!(tokio::time::Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = &j["contexts"][0]["runs"][0];
    assert_eq!(
        (r["run_id"].as_str(), r["pending"].as_u64()),
        (Some(id.as_str()), Some(11)),
        "{r}"
    );
    let reason = r["pending_jobs"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("quota") || reason.contains("insufficient"),
        "{r}"
    );
    let out = c.vast(&["execution", "cluster", "monitor", "--once"]).await;
    let m = text(&out.stdout);
    assert!(
        m.contains("0/15  (0 ok, 0 fail)  Running: 4  Pending: 11"),
        "{m}"
    );
    assert!(
        m.contains("  pending: ") && m.contains("(next in queue at position 1)"),
        "{m}"
    );
}

/// Every step of setup, run, run-cleanup and cleanup run twice (the engine's `run_twice`):
/// the cluster ends as after single runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_step_is_idempotent() {
    use vast::engine::{EngineOptions, Outcome};
    let twice = || EngineOptions {
        run_twice: true,
        ..Default::default()
    };
    let once = super::cluster_support::start(SimConfig::default()).await;
    let dup = super::cluster_support::start(SimConfig::default()).await;
    for (c, opts) in [(&once, EngineOptions::default()), (&dup, twice())] {
        let (_, o) = c
            .execute("setup", &c.setup_params("rke2"), opts.clone())
            .await;
        assert_eq!(o, Outcome::Succeeded);
    }
    let (w1, w2) = (once.world().await, dup.world().await);
    assert_eq!(w1, w2);
    // run: same Jobs (by count per run; names depend on the run id), same bucket.
    let (id1, o) = once
        .execute("run", &once.run_params(2, false), EngineOptions::default())
        .await;
    assert_eq!(o, Outcome::Succeeded);
    let (id2, o) = dup.execute("run", &dup.run_params(2, false), twice()).await;
    assert_eq!(o, Outcome::Succeeded);
    assert_eq!(once.world().await.jobs[&id1].len(), 10);
    assert_eq!(dup.world().await.jobs[&id2].len(), 10);
    // What was uploaded (results that finished pods wrote under <config>/<n>/ are timing).
    let strip = |b: std::collections::BTreeMap<String, Vec<u8>>| -> Vec<(String, usize)> {
        b.into_iter()
            .filter(|(k, _)| {
                !k.split('/')
                    .nth(1)
                    .is_some_and(|p| p.bytes().all(|c| c.is_ascii_digit()))
            })
            .map(|(k, v)| (k, v.len()))
            .collect()
    };
    assert_eq!(
        strip(once.bucket(&id1).await),
        strip(dup.bucket(&id2).await)
    );
    // run --follow twice over: the follow step's second pass finds the Jobs already gone.
    let (_, o) = dup.execute("run", &dup.run_params(1, true), twice()).await;
    assert_eq!(o, Outcome::Succeeded);
    // run-cleanup of one run, then cleanup.
    let p = serde_json::json!({"context": null, "namespace": NS, "run_id": id2});
    let (_, o) = dup.execute("run-cleanup", &p, twice()).await;
    assert_eq!(o, Outcome::Succeeded);
    assert!(!dup.world().await.jobs.contains_key(&id2));
    for (c, opts) in [(&once, EngineOptions::default()), (&dup, twice())] {
        let (_, o) = c.execute("cleanup", &c.cleanup_params("rke2"), opts).await;
        assert_eq!(o, Outcome::Succeeded);
    }
    assert_eq!(once.world().await, dup.world().await);
}

/// The MinIO keys exist only in the Secret: never in vast's output, logs or run store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keys_never_reach_output_logs_or_the_run_store() {
    let c = start(SimConfig::default()).await;
    let mut all = String::new();
    for args in [
        &["execution", "cluster", "setup", "rke2", "-vv"][..],
        &["execution", "cluster", "run", "--follow", "-vv"][..],
        &["execution", "cluster", "monitor", "--once", "--json"][..],
    ] {
        let out = c.vast(args).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        all.push_str(&text(&out.stdout));
        all.push_str(&text(&out.stderr));
    }
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.client(), NS);
    let s = secrets.get("vast-s3-credentials").await.unwrap();
    let data = s.data.unwrap();
    let keys: Vec<String> = ["access-key", "secret-key"]
        .iter()
        .map(|k| String::from_utf8(data[*k].0.clone()).unwrap())
        .collect();
    assert!(keys.iter().all(|k| k.len() >= 16), "{}", keys.len());
    for k in &keys {
        assert!(!all.contains(k.as_str()), "a key was printed");
    }
    // Every file of the state directory (sled, frame log, snapshots, records, out_template).
    let mut stack = vec![c.state.clone()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files += 1;
                let bytes = std::fs::read(&p).unwrap();
                for k in &keys {
                    assert!(
                        !bytes.windows(k.len()).any(|w| w == k.as_bytes()),
                        "a key is stored in {}",
                        p.display()
                    );
                }
            }
        }
    }
    assert!(files > 5, "{files}");
}

/// monitor without `--context` watches every context named in the `.vast` file's per-cluster
/// lists, each in the namespace of its own saved setup; an unreachable one is marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_multi_context_view() {
    let a = start(SimConfig::default()).await;
    let b = vast_sim::server::Sim::start(SimConfig::default())
        .await
        .unwrap();
    let vast_file = a.project.join("growth_sim.vast");
    let text_v = std::fs::read_to_string(&vast_file).unwrap();
    std::fs::write(
        &vast_file,
        text_v.replace(
            "    cpu: 1\n",
            "    cpu:\n    - ctx-a: 1\n    - ctx-b: 1\n    - ctx-c: 1\n",
        ),
    )
    .unwrap();
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- {{name: a, cluster: {{server: '{}'}}}}\n- {{name: b, cluster: {{server: '{}'}}}}\n- {{name: c, cluster: {{server: 'http://127.0.0.1:9'}}}}\ncontexts:\n- {{name: ctx-a, context: {{cluster: a, user: u}}}}\n- {{name: ctx-b, context: {{cluster: b, user: u}}}}\n- {{name: ctx-c, context: {{cluster: c, user: u}}}}\ncurrent-context: ctx-a\nusers:\n- {{name: u, user: {{}}}}\n",
        a.sim.url(),
        b.url()
    );
    std::fs::write(&a.kubeconfig, kc).unwrap();
    // Without --context the multi-cluster .vast is refused, as upstream.
    let out = a.vast(&["execution", "cluster", "run"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Please specify --context/-x to select the target cluster."),
        "{}",
        text(&out.stderr)
    );
    assert!(a
        .vast(&["execution", "cluster", "setup", "rke2", "-x", "ctx-a"])
        .await
        .status
        .success());
    let out = a
        .vast(&[
            "execution",
            "cluster",
            "setup",
            "rke2",
            "-x",
            "ctx-b",
            "-n",
            "sims",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ids = Vec::new();
    for ctx in ["ctx-a", "ctx-b"] {
        let out = a
            .vast(&["execution", "cluster", "run", "-x", ctx, "-r", "1"])
            .await;
        assert!(out.status.success(), "{ctx}: {}", text(&out.stderr));
        ids.push(run_id_of(&text(&out.stdout)));
    }
    let out = a.vast(&["execution", "cluster", "monitor", "--once"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = text(&out.stdout);
    let lines: Vec<&str> = m.lines().collect();
    assert_eq!(lines[0], "[ctx-a]", "{m}");
    assert!(lines[1].starts_with(&format!("  {}  [", ids[0])), "{m}");
    let b_at = lines
        .iter()
        .position(|l| *l == "[ctx-b]")
        .expect("ctx-b header");
    assert!(
        lines[b_at + 1].starts_with(&format!("  {}  [", ids[1])),
        "{m}"
    );
    assert!(
        lines.contains(&"[ctx-c] (unreachable)") && lines.contains(&"  (unreachable)"),
        "{m}"
    );
    let out = a
        .vast(&["execution", "cluster", "monitor", "--once", "--json"])
        .await;
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["contexts"][1]["namespace"], "sims", "{j}");
    assert_eq!(j["contexts"][2]["reachable"], false, "{j}");
}

/// Ctrl-C during `run --follow` deletes nothing (upstream deleted the running Jobs): exit 130,
/// the Jobs keep running, and `vast resume` follows them to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_follow_keeps_the_jobs_and_resume_finishes() {
    use std::io::BufRead;
    let mut cfg = SimConfig::default();
    cfg.pods.job_duration_ms = 4000;
    let c = start(cfg).await;
    c.setup_cli("rke2").await;
    let mut child = c
        .command(&["execution", "cluster", "run", "--follow", "-r", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (id, rest) = tokio::task::spawn_blocking(move || {
        let mut id = String::new();
        let mut lines = std::io::BufReader::new(stderr).lines();
        for l in lines.by_ref() {
            let l = l.unwrap();
            if let Some(r) = l.strip_prefix("run ") {
                if let Some(x) = r.split(' ').next().filter(|x| x.starts_with("run-")) {
                    id = x.to_string();
                }
            }
            // The follow's first progress line (stderr is not a terminal): it is watching.
            if l.starts_with(&format!("{id}  ")) && l.contains("/5 jobs finished") {
                break;
            }
        }
        (id, lines)
    })
    .await
    .unwrap();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let tail: Vec<String> = rest.map_while(Result::ok).collect();
    assert_eq!(status.code(), Some(130), "{tail:?}");
    assert!(
        tail.iter()
            .any(|l| l.contains(&format!("resume with: vast resume {id}"))),
        "{tail:?}"
    );
    assert_eq!(
        c.world().await.jobs[&id].len(),
        5,
        "the Jobs were not deleted"
    );
    let out = c.vast(&["resume", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Jobs: 5 total, 5 succeeded, 0 failed"),
        "{}",
        text(&out.stdout)
    );
}

/// `run --cleanup` removes the Jobs of earlier runs first, never its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_cleanup_flag_removes_earlier_runs_only() {
    let c = start(SimConfig::default()).await;
    c.setup_cli("rke2").await;
    let out = c.vast(&["execution", "cluster", "run", "-r", "1"]).await;
    let first = run_id_of(&text(&out.stdout));
    let out = c
        .vast(&["execution", "cluster", "run", "-r", "1", "--cleanup"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = run_id_of(&text(&out.stdout));
    let w = c.world().await;
    assert!(!w.jobs.contains_key(&first), "{w:?}");
    assert_eq!(w.jobs[&second].len(), 5, "{w:?}");
}

/// gcp `spot=true` is kept with the saved setup and puts every Job of a run on GKE spot nodes
/// (node selector and toleration); only `true`/`false` are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_spot_setup_puts_the_jobs_on_spot_nodes() {
    let c = start(SimConfig::default()).await;
    let out = c
        .vast(&["execution", "cluster", "setup", "gcp", "-o", "spot=yes"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("invalid value 'yes' for option 'spot'"),
        "{}",
        text(&out.stderr)
    );
    let out = c
        .vast(&["execution", "cluster", "setup", "gcp", "-o", "spot=true"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let saved =
        std::fs::read_to_string(c.project.join(".robovast_cluster_config.vast-sim")).unwrap();
    assert!(
        saved.contains("spot: 'true'") || saved.contains("spot: \"true\""),
        "{saved}"
    );
    let out = c.vast(&["execution", "cluster", "run", "-r", "1"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = run_id_of(&text(&out.stdout));
    let jobs: Api<Job> = Api::namespaced(c.client(), NS);
    let list = jobs
        .list(&ListParams::default().labels(&format!("run-id={}", id.to_lowercase())))
        .await
        .unwrap();
    assert!(!list.items.is_empty());
    for j in list.items {
        let spec = j.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        assert!(spec.pod_failure_policy.is_some());
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            pod.node_selector.unwrap()["cloud.google.com/gke-spot"],
            "true"
        );
        let t = &pod.tolerations.unwrap()[0];
        assert_eq!(
            (t.key.as_deref(), t.value.as_deref(), t.effect.as_deref()),
            (
                Some("cloud.google.com/gke-spot"),
                Some("true"),
                Some("NoSchedule")
            )
        );
    }
}

/// An unreachable cluster is a configuration problem: `setup` says so in one line naming the
/// context and server, creates no run to resume, and kube-client's own ERROR lines stay out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_is_one_clear_line_and_no_run() {
    let c = start(SimConfig::default()).await;
    let kc = c.tmp.path().join("unreachable-kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"http://127.0.0.1:9\"}\ncontexts:\n- name: lab\n  context: {cluster: c, user: u}\ncurrent-context: lab\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let mut cmd = c.command(&["execution", "cluster", "setup", "rke2"]);
    cmd.env("KUBECONFIG", &kc);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Connection refused")
            && stderr.contains("context 'lab', server http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!stderr.contains("failed with error"), "{stderr}");
    assert!(
        !stderr.contains("vast resume"),
        "no run to resume: {stderr}"
    );
    let runs = c.state.join("runs");
    assert!(
        !runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none(),
        "no run was created"
    );
}
