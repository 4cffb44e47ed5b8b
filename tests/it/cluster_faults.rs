//! Cluster operations under faults (vast-sim answering 429/500/503 and resetting connections
//! on a fraction of API calls, dropping port-forward streams, restarting the robovast pod),
//! permanent errors failing fast with the server's message, and the guarantees around the
//! shared ClusterQueue: `run-cleanup` never stops it or evicts other runs, `cleanup` always
//! restores it. Also: adoption of existing Jobs, exec auth plugins, helm.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use vast::engine::{Engine, EngineOptions, ErrorKind, Injection, Outcome, RunId};
use vast_sim::config::SimConfig;
use vast_sim::faults::FaultConfig;

use super::cluster_support::{run_id_of, start, started_id, text, Cluster, NS};

fn faults(v: serde_json::Value) -> FaultConfig {
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_and_run_complete_under_api_faults_and_port_forward_drops() {
    let c = start(SimConfig::default()).await;
    c.sim.faults().set(faults(json!({
        "seed": 7,
        "api": [
            {"rate": 0.08, "action": {"status": {"codes": [500, 503, 429, 504], "retry_after_seconds": 0}}},
            {"rate": 0.03, "action": "reset"},
        ],
        "portforward": {"drop_after_bytes": 24000, "ports": [9000]},
    })));
    let out = c.vast(&["execution", "cluster", "setup", "rke2"]).await;
    assert!(out.status.success(), "setup: {}", text(&out.stderr));
    let out = c
        .vast(&["execution", "cluster", "run", "--follow", "-r", "2"])
        .await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "run: {err}");
    assert!(
        text(&out.stdout).contains("Jobs: 10 total, 10 succeeded, 0 failed"),
        "{}",
        text(&out.stdout)
    );
    // The faults really fired and were retried by the steps.
    let id = started_id(&err, "run-");
    let show = c.vast(&["runs", "show", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let errors: usize = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["errors"].as_array().map_or(0, |e| e.len()))
        .sum();
    eprintln!("transient errors retried by the run's steps: {errors}");
    let bucket = c.bucket(&id).await;
    assert!(
        bucket.contains_key("_config/configurations.yaml") && bucket.len() > 10,
        "{:?}",
        bucket.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_fail_fast_with_the_servers_message() {
    let c = start(SimConfig::default()).await;
    c.setup_cli("rke2").await;
    for code in [403, 422] {
        c.sim.faults().set(faults(json!({"api": [
            {"verbs": ["create"], "resources": ["jobs"], "action": {"status": {"codes": [code]}}}
        ]})));
        let t0 = std::time::Instant::now();
        let out = c.vast(&["execution", "cluster", "run", "-r", "1"]).await;
        assert_eq!(out.status.code(), Some(1), "{code}: {}", text(&out.stderr));
        let e = text(&out.stderr);
        assert!(
            e.contains(&format!("{code} ")) && e.contains("injected fault on create jobs"),
            "{e}"
        );
        assert!(
            e.contains("(after fixing the cause: vast resume run-"),
            "{e}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{code}: took {:?}",
            t0.elapsed()
        );
        // Each failing Job creation was attempted once (no retries of a permanent error).
        let id = started_id(&e, "run-");
        let show = c.vast(&["runs", "show", &id, "--json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        for s in v["steps"].as_array().unwrap() {
            if s["name"] == "create-job" && s["child"].is_number() && s["status"] == "failed" {
                assert_eq!(s["attempts"], 1, "{s}");
            }
        }
        // Fixed: the run resumes and finishes.
        c.sim.faults().set(FaultConfig::default());
        let out = c.vast(&["resume", &id]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(c.world().await.jobs[&id].len(), 5);
    }
}

/// `run --follow` against a cluster whose every listing of the Jobs fails (an unreachable API
/// server, as far as the watch can tell): kube-runtime's watcher emits an `Init` event before
/// each re-list, which must not reset the error count. The follow step's attempt gives up after
/// a bounded number of errors instead of retrying for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_gives_up_when_every_listing_of_the_jobs_fails() {
    let mut cfg = SimConfig::default();
    cfg.pods.job_duration_ms = 600_000;
    let c = start(cfg).await;
    c.setup_in_process("rke2").await;
    // The Jobs are created; the first follow attempt fails on purpose, so the run stops.
    let inject = EngineOptions {
        inject: vec![Injection {
            step: "follow".into(),
            kind: ErrorKind::Permanent,
            times: 1,
        }],
        ..Default::default()
    };
    let (id, o) = c.execute("run", &c.run_params(1, true), inject).await;
    assert!(matches!(o, Outcome::Failed(_)), "{o:?}");
    assert_eq!(c.world().await.jobs[&id].len(), 5);
    // From now on every list (and watch) of Jobs fails.
    c.sim.faults().set(faults(json!({"api": [
        {"verbs": ["list", "watch"], "resources": ["jobs"],
         "action": {"status": {"codes": [503], "retry_after_seconds": 0}}}
    ]})));
    // kube-rs's own retry of 503 (`default_retry`: 15 retries inside one call, minutes) off,
    // so each failed list reaches the watcher at once, as a refused connection would.
    let mut config = kube::Config::new(c.sim.url().parse().unwrap());
    config.default_namespace = NS.into();
    config.default_retry = false;
    let mut resources = vast::engine::Resources::default();
    resources.insert(vast::ops::base::ClusterEnv {
        client: kube::Client::try_from(config).unwrap(),
        context: None,
        namespace: NS.into(),
    });
    resources.insert(vast::ops::run::ProjectCache::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let store = vast::store::StateDir::new(c.state.clone())
        .open_run(&id)
        .unwrap();
    let engine = Engine::new(vast::ops::registry(), resources);
    let t0 = std::time::Instant::now();
    let resumed = tokio::spawn({
        let cancel = cancel.clone();
        async move { engine.execute(store, cancel).await }
    });
    // The follow step's resumed attempt must fail on its own (well before the deadline).
    let deadline = Duration::from_secs(150);
    let error = loop {
        assert!(
            t0.elapsed() < deadline,
            "the follow step still retries after {:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let show = c.vast(&["runs", "show", &id, "--json"]).await;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&show.stdout) else {
            continue;
        };
        let follow = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "follow")
            .cloned()
            .unwrap();
        let watch_error = follow["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("watching this run's Jobs")
            })
            .cloned();
        if let Some(e) = watch_error {
            break e;
        }
    };
    let elapsed = t0.elapsed();
    cancel.cancel();
    let o = resumed.await.unwrap().unwrap();
    assert_eq!(o, Outcome::Interrupted);
    let m = error["message"].as_str().unwrap();
    assert_eq!(error["kind"], "transient", "{error}");
    assert!(m.contains("without progress") && m.contains("503"), "{m}");
    eprintln!("the follow attempt gave up after {elapsed:?}: {m}");
}

/// Polls the ClusterQueue's stopPolicy every few ms and records every value other than None.
fn watch_stop_policy(
    c: &Cluster,
) -> (
    Arc<AtomicBool>,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s2, seen2, client) = (stop.clone(), seen.clone(), c.client());
    let h = tokio::spawn(async move {
        let cqs = vast::cluster::kueue::cluster_queues(&client);
        while !s2.load(Ordering::Relaxed) {
            if let Ok(Some(cq)) = cqs.get_opt("robovast-cluster-queue").await {
                if let Some(p) = cq.data.pointer("/spec/stopPolicy").and_then(|v| v.as_str()) {
                    if p != "None" {
                        seen2.lock().unwrap().push(p.to_string());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    (stop, seen, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_cleanup_of_one_run_never_stops_the_queue_or_evicts_other_runs() {
    let mut cfg = SimConfig::default();
    cfg.pods.job_duration_ms = 120_000;
    let c = start(cfg).await;
    c.setup_cli("rke2").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = c.vast(&["execution", "cluster", "run", "-r", "1"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        ids.push(run_id_of(&text(&out.stdout)));
    }
    // Wait until the other run's Jobs are admitted and running.
    let jobs: Api<Job> = Api::namespaced(c.client(), NS);
    let other = format!("run-id={}", ids[1]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let l = jobs
            .list(&ListParams::default().labels(&other))
            .await
            .unwrap();
        if l.items
            .iter()
            .all(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) >= 1)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "other run never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pods_before: Vec<String> = {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.client(), NS);
        let mut v: Vec<String> = pods
            .list(&ListParams::default().labels(&other))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        v.sort();
        v
    };
    let (stop, seen, h) = watch_stop_policy(&c);
    let out = c
        .vast(&["execution", "cluster", "run-cleanup", "--run-id", &ids[0]])
        .await;
    stop.store(true, Ordering::Relaxed);
    h.await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        seen.lock().unwrap().is_empty(),
        "stopPolicy was set: {:?}",
        seen.lock().unwrap()
    );
    let w = c.world().await;
    assert!(!w.jobs.contains_key(&ids[0]), "{w:?}");
    assert_eq!(w.jobs[&ids[1]].len(), 5, "{w:?}");
    // The other run's pods were not evicted (same pods, still running).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.client(), NS);
    let mut after: Vec<String> = pods
        .list(&ListParams::default().labels(&other))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    after.sort();
    assert_eq!(pods_before, after);
    // Its Workloads are still admitted.
    let wls = vast::cluster::kueue::workloads(&c.client(), Some(NS))
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        wls.items.len(),
        5,
        "only the other run's workloads are left"
    );
    for w in &wls.items {
        let admitted = w.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Admitted" && c["status"] == "True");
        assert!(admitted, "{}", w.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_restores_the_queue_when_a_removal_fails() {
    let mut cfg = SimConfig::default();
    cfg.pods.job_duration_ms = 120_000;
    let c = start(cfg).await;
    c.setup_cli("rke2").await;
    assert!(c
        .vast(&["execution", "cluster", "run", "-r", "1"])
        .await
        .status
        .success());
    c.sim.faults().set(faults(json!({"api": [
        {"verbs": ["deletecollection"], "resources": ["jobs"], "action": {"status": {"codes": [403]}}}
    ]})));
    let (stop, seen, h) = watch_stop_policy(&c);
    let out = c.vast(&["execution", "cluster", "cleanup"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let e = text(&out.stderr);
    assert!(e.contains("deleting the scenario Jobs: 403"), "{e}");
    // The queue was held during the attempt and is not left stopped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    h.await.unwrap();
    assert!(
        seen.lock().unwrap().iter().any(|p| p == "HoldAndDrain"),
        "never held"
    );
    assert_eq!(c.world().await.stop_policy, None, "queue left stopped");
    // Fixed: resume finishes the cleanup.
    c.sim.faults().set(FaultConfig::default());
    let id = started_id(&e, "cleanup-");
    let out = c.vast(&["resume", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let w = c.world().await;
    assert!(
        w.jobs.is_empty() && w.robovast_pod.is_none() && !w.cluster_queue,
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_jobs_of_the_run_are_adopted_and_foreign_ones_refused() {
    let c = start(SimConfig::default()).await;
    c.setup_in_process("rke2").await;
    let vast = vast::project::VastFile::load(&c.project.join("growth_sim.vast")).unwrap();
    let first = vast::project::generate(&vast).unwrap()[0].name.clone();
    let jobs: Api<Job> = Api::namespaced(c.client(), NS);
    let make = |name: &str, run: &str| -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"jobgroup": "scenario-runs", "run-id": run}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "x"}]}}},
        }))
        .unwrap()
    };
    // A Job of this run that exists already (e.g. created by an attempt whose record was lost).
    let id = RunId::generate("run");
    let name = vast::manifests::job::job_name(id.as_str(), &first, 0);
    let created = jobs
        .create(&PostParams::default(), &make(&name, id.as_str()))
        .await
        .unwrap();
    let (_, o) = c
        .execute_as(
            &id,
            "run",
            &c.run_params(1, false),
            EngineOptions::default(),
        )
        .await;
    assert_eq!(o, Outcome::Succeeded);
    assert_eq!(c.world().await.jobs[id.as_str()].len(), 5);
    let now = jobs.get(&name).await.unwrap();
    assert_eq!(
        now.metadata.uid, created.metadata.uid,
        "adopted, not re-created"
    );

    // A Job with the name of one of this run's Jobs but another run's label: refused.
    let id2 = RunId::generate("run");
    let name2 = vast::manifests::job::job_name(id2.as_str(), &first, 0);
    jobs.create(&PostParams::default(), &make(&name2, "run-someone-else"))
        .await
        .unwrap();
    let (_, o) = c
        .execute_as(
            &id2,
            "run",
            &c.run_params(1, false),
            EngineOptions::default(),
        )
        .await;
    match o {
        Outcome::Failed(m) => assert!(m.contains("belongs to run 'run-someone-else'"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_auth_plugins_are_run_and_their_token_never_printed() {
    let c = start(SimConfig::default()).await;
    let marker = c.tmp.path().join("plugin-ran");
    let plugin = c.tmp.path().join("gke-auth-plugin");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho ran >> '{}'\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"secret-token-xyz\"}}}}'\n",
            marker.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gke\n  cluster: {{server: '{}'}}\ncontexts:\n- name: gke_ctx\n  context: {{cluster: gke, user: gke-user, namespace: default}}\ncurrent-context: gke_ctx\nusers:\n- name: gke-user\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: '{}'\n      interactiveMode: Never\n      provideClusterInfo: true\n",
        c.sim.url(),
        plugin.display()
    );
    let kc = c.tmp.path().join("gke-kubeconfig");
    std::fs::write(&kc, kubeconfig).unwrap();
    let out = c
        .command(&[
            "execution",
            "cluster",
            "setup",
            "minikube",
            "-x",
            "gke_ctx",
            "-v",
        ])
        .env("KUBECONFIG", &kc)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(marker.is_file(), "the exec plugin was not run");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("secret-token-xyz"), "{all}");
    assert!(c.project.join(".robovast_cluster_config.gke_ctx").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kueue_with_helm_and_without() {
    let c = start(SimConfig::default()).await;
    // A fake helm that reports our release and records every call.
    let log = c.tmp.path().join("helm.log");
    let helm = c.tmp.path().join("helm");
    std::fs::write(
        &helm,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\ncase \"$1\" in list) echo kueue;; esac\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = c
        .command(&["execution", "cluster", "setup", "rke2"])
        .env("VAST_HELM", &helm)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("list -n kueue-system -q -f kueue"),
        "{calls}"
    );
    assert!(
        calls.contains("upgrade kueue oci://registry.k8s.io/kueue/charts/kueue --version=0.16.1 --namespace=kueue-system --values="),
        "{calls}"
    );
    // Cleanup with our release: helm uninstall.
    let out = c
        .command(&["execution", "cluster", "cleanup"])
        .env("VAST_HELM", &helm)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("uninstall kueue --namespace=kueue-system"));

    // No Kueue and no helm: a clear error saying how to get either, nothing deployed.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(c.client());
    for n in vast::cluster::kueue::CRDS {
        crds.delete(n, &Default::default()).await.unwrap();
    }
    let out = c.vast(&["execution", "cluster", "setup", "rke2"]).await;
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("Kueue is not installed")
            && e.contains("helm is not on PATH")
            && e.contains("https://helm.sh/docs/intro/install/"),
        "{e}"
    );
    assert_eq!(c.world().await.robovast_pod, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_supervisor_survives_pod_restarts_and_dropped_streams() {
    let c = start(SimConfig::default()).await;
    c.setup_in_process("rke2").await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.client(), NS);
    let pf = vast::cluster::portforward::PortForward::start(pods, "robovast", 9000)
        .await
        .unwrap();
    pf.probe().await.unwrap();
    let creds = vast::cluster::s3::read_credentials(c.client(), NS)
        .await
        .unwrap();
    // Every stream from now on is dropped after 7,000 bytes (both directions counted): a
    // few requests of 2,000 bytes each, then the next one breaks mid-way.
    c.sim.faults().set(faults(
        json!({"portforward": {"drop_after_bytes": 7000, "ports": [9000]}}),
    ));
    let s3 = vast::cluster::s3::client(&pf.http_endpoint(), &creds);
    vast::cluster::s3::ensure_bucket(&s3, "pf-test")
        .await
        .unwrap();
    let admin = format!("/sim/pods/{NS}/robovast/restart?wipe=false");
    for i in 0..20u32 {
        if i % 7 == 3 {
            let status = c.sim_post(&admin).await;
            assert!(status.contains(" 20"), "{status}");
        }
        let body = vec![b'a' + (i % 26) as u8; 2_000];
        s3.put_object()
            .bucket("pf-test")
            .key(format!("k{i}"))
            .body(body.clone().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {i}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        // A GET whose body is cut by a dropped stream is repeated (the transfer layer resumes
        // by Range); the next connection gets a fresh stream.
        let mut got = None;
        for _ in 0..5 {
            let Ok(r) = s3
                .get_object()
                .bucket("pf-test")
                .key(format!("k{i}"))
                .send()
                .await
            else {
                continue;
            };
            if let Ok(b) = r.body.collect().await {
                got = Some(b.into_bytes().to_vec());
                break;
            }
        }
        assert_eq!(got.as_deref(), Some(&body[..]), "get {i}");
    }
    pf.probe().await.unwrap();
    let st = pf.stats();
    eprintln!(
        "connections {} streams {} open failures {} given up {}",
        st.connections.load(Ordering::Relaxed),
        st.streams.load(Ordering::Relaxed),
        st.open_failures.load(Ordering::Relaxed),
        st.given_up.load(Ordering::Relaxed)
    );
    assert!(
        st.streams.load(Ordering::Relaxed) > 3,
        "streams were re-established"
    );
}

/// The S3 client retries only requests whose connection broke before an answer (see the
/// port-forward test above); an answer of the server is the caller's retry layer's: the SDK
/// sends a request that got 503 SlowDown once, not four times. A directory upload goes on past
/// one file's transient failure, so its retry sends only that file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_errors_are_left_to_the_callers_retry_and_do_not_stop_an_upload() {
    use vast::cluster::s3;
    let c = start(SimConfig::default()).await;
    c.setup_in_process("rke2").await;
    let client = c.direct_s3().await;
    s3::ensure_bucket(&client, "one-layer").await.unwrap();
    c.sim.faults().set(faults(
        json!({"s3": [{"ops": ["PutObject"], "max_hits": 1, "codes": [503]}]}),
    ));
    let err = client
        .put_object()
        .bucket("one-layer")
        .key("k")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect_err("the 503 was retried by the SDK");
    assert_eq!(
        aws_sdk_s3::error::ProvideErrorMetadata::code(&err),
        Some("SlowDown")
    );

    // 12 files, one PUT fails: the other 11 are uploaded, the error is transient, and the
    // retry sends the one that is missing.
    let dir = c.tmp.path().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..12 {
        std::fs::write(dir.join(format!("f{i:02}.txt")), format!("file {i}")).unwrap();
    }
    c.sim.faults().set(faults(json!({"s3": [
        {"ops": ["PutObject"], "rate": 1.0, "max_hits": 1, "codes": [500]}
    ]})));
    let err = s3::upload_dir(&client, "one-layer", &dir)
        .await
        .expect_err("one PUT failed");
    assert!(err.is_transient(), "{err}");
    let stored = s3::list_objects(&client, "one-layer").await.unwrap();
    assert_eq!(stored.len(), 11, "{stored:?}");
    let again = s3::upload_dir(&client, "one-layer", &dir).await.unwrap();
    assert_eq!((again.uploaded, again.skipped), (1, 11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_are_uploaded_in_parts_and_resume_at_the_next_part() {
    use vast::cluster::s3;
    let c = start(SimConfig::default()).await;
    c.setup_in_process("rke2").await;
    let dir = c.tmp.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let size = 2 * s3::PART_SIZE as usize + 1_234_567;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("rosbag.mcap"), &data).unwrap();
    std::fs::write(dir.join("small.txt"), b"small").unwrap();
    let addr = c.sim.dataplane().endpoint(NS, "robovast", 9000).unwrap();
    let creds = s3::read_credentials(c.client(), NS).await.unwrap();
    let client = s3::client(&format!("http://{addr}"), &creds);
    s3::ensure_bucket(&client, "big").await.unwrap();

    // The second part fails (every SDK retry too): the upload stops with one part done.
    let saved: Arc<Mutex<Vec<s3::UploadCursor>>> = Arc::default();
    let sink_saved = saved.clone();
    let sink = move |cur: &s3::UploadCursor| sink_saved.lock().unwrap().push(cur.clone());
    // The first part goes through; once the cursor holds it, every UploadPart fails.
    let fail_after_first = {
        let f = c.sim.faults().clone();
        move |cur: &s3::UploadCursor| {
            if cur.multipart.values().any(|m| m.parts.len() == 1) {
                f.set(faults(
                    json!({"s3": [{"ops": ["UploadPart"], "codes": [500]}]}),
                ));
            }
        }
    };
    let both = move |cur: &s3::UploadCursor| {
        sink(cur);
        fail_after_first(cur);
    };
    let err = s3::upload_dir_resumable(&client, "big", &dir, s3::UploadCursor::default(), &both)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let cursor = saved.lock().unwrap().last().cloned().unwrap();
    let state = cursor.multipart["rosbag.mcap"].clone();
    assert_eq!(state.parts.len(), 1, "{cursor:?}");

    // Resumed from the cursor: same UploadId, only parts 2 and 3 are sent.
    c.sim.faults().set(FaultConfig::default());
    saved.lock().unwrap().clear();
    let sink_saved = saved.clone();
    let sink = move |cur: &s3::UploadCursor| sink_saved.lock().unwrap().push(cur.clone());
    let summary = s3::upload_dir_resumable(&client, "big", &dir, cursor, &sink)
        .await
        .unwrap();
    assert_eq!(summary.files(), 2);
    let seen = saved.lock().unwrap().clone();
    let first = &seen[0].multipart["rosbag.mcap"];
    assert_eq!(
        first.upload_id, state.upload_id,
        "the same multipart upload continues"
    );
    assert_eq!(first.parts.len(), 2, "part 1 was not sent again");
    assert!(
        seen.last().unwrap().multipart.is_empty(),
        "finished uploads leave the cursor"
    );
    let got = client
        .get_object()
        .bucket("big")
        .key("rosbag.mcap")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().to_vec(),
        data
    );
    // Again: nothing is sent (the multipart ETag is recognised).
    let again = s3::upload_dir(&client, "big", &dir).await.unwrap();
    assert_eq!((again.uploaded, again.skipped), (0, 2));
}
