//! Unattended campaigns against vast-sim (issue 13): infrastructure losses are not scenario
//! failures, lost runs are re-submitted, `wait` says by its exit code how a run ended,
//! `run --follow --download` collects the results without a human (also across a SIGKILL),
//! the share is checked before any Job exists, notifications arrive once.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};
use vast::ops::runs::{JobOutcome, RunRecord};
use vast_sim::config::SimConfig;
use vast_sim::faults::FaultConfig;

use crate::cluster_support::{start, text, Cluster, NS};

fn sim_config(faults: Value, duration_ms: u64) -> SimConfig {
    let mut config = SimConfig::default();
    config.pods.job_duration_ms = duration_ms;
    config.faults = serde_json::from_value::<FaultConfig>(faults).expect("fault config");
    config
}

/// The `run <id> started` id in a command's stderr.
fn started(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let rest = l.strip_prefix("run ")?;
        let (id, tail) = rest.split_once(' ')?;
        (tail.starts_with("started") && id.starts_with("run-")).then(|| id.to_string())
    })
}

fn record(c: &Cluster, id: &str) -> RunRecord {
    RunRecord::load(&c.state, id)
        .expect("record readable")
        .expect("record exists")
}

/// Sets `execution.retries` in the project's `.vast` file.
fn set_retries(c: &Cluster, n: u32) {
    let path = c.project.join("growth_sim.vast");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "  timeout: 600\n",
        &format!("  timeout: 600\n  retries: {n}\n"),
    );
    std::fs::write(&path, text).unwrap();
}

/// A local webhook receiver: every JSON body POSTed to it.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/vast-topic", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                sink.lock().unwrap().push(v);
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (url, got)
}

async fn sim_stats(c: &Cluster) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(c.sim.addr()).await.unwrap();
    s.write_all(b"GET /sim/stats HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let t = text(&out);
    let body = t.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("/sim/stats: {e}: {t}"))
}

/// Result directories `<config>/<n>` (not `_config/`) with files under `dir`.
fn result_dirs(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(configs) = std::fs::read_dir(dir) else {
        return 0;
    };
    for c in configs
        .flatten()
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('_'))
    {
        for r in std::fs::read_dir(c.path()).unwrap().flatten() {
            let numbered = r
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|ch| ch.is_ascii_digit());
            if numbered
                && r.path().is_dir()
                && std::fs::read_dir(r.path()).unwrap().next().is_some()
            {
                n += 1;
            }
        }
    }
    n
}

/// 200 runs, 20 % of the scenario pods preempted once (GKE spot), vast SIGKILLed mid-way and
/// finished by `vast resume`: every run succeeded, every result downloaded, the bucket
/// removed, exit 0, no run with two successful attempts, the end event delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_of_200_runs_on_spot_nodes_survives_preemption_and_a_sigkill() {
    let c = start(sim_config(
        json!({"seed": 7, "preempt": {"fraction": 0.2}}),
        150,
    ))
    .await;
    c.setup_cli("rke2").await;
    let (url, events) = receiver().await;
    let out = c.tmp.path().join("results-out");
    let out_s = out.display().to_string();
    let args = [
        "execution",
        "cluster",
        "run",
        "-r",
        "40",
        "--follow",
        "--download",
        "--output",
        out_s.as_str(),
    ];
    let err_path = c.tmp.path().join("campaign.err");
    let mut cmd = c.command(&args);
    cmd.env("VAST_NOTIFY_URL", &url)
        .stdout(std::fs::File::create(c.tmp.path().join("campaign.out")).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    // SIGKILL once a third of the runs have an observed outcome.
    let started_at = Instant::now();
    let id = loop {
        assert!(
            started_at.elapsed() < Duration::from_secs(240),
            "campaign made no progress: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "campaign ended before the kill ({s}): {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        if let Some(id) = started(&err) {
            if let Ok(Some(r)) = RunRecord::load(&c.state, &id) {
                if r.finished.len() >= 70 {
                    break id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    // While vast is down, a Job that has no outcome yet vanishes (deleted, as a TTL or a
    // person would): the resumed campaign finds it gone unobserved, lost, and re-submits it.
    let jobs: Api<Job> = Api::namespaced(c.client(), NS);
    let rec = record(&c, &id);
    let listed = jobs
        .list(&ListParams::default().labels(&format!("run-id={}", vast::ops::run::bucket(&id))))
        .await
        .unwrap();
    let victim = listed
        .items
        .iter()
        .filter_map(|j| j.metadata.name.clone())
        .find(|n| !rec.finished.contains_key(n))
        .expect("a Job without an outcome at the kill");
    jobs.delete(&victim, &kube::api::DeleteParams::background())
        .await
        .unwrap();

    let mut resume = c.command(&["resume", &id]);
    resume.env("VAST_NOTIFY_URL", &url);
    let res = tokio::task::spawn_blocking(move || resume.output().unwrap())
        .await
        .unwrap();
    assert!(
        res.status.success(),
        "resume: {}\n{}",
        text(&res.stdout),
        text(&res.stderr)
    );

    let rec = record(&c, &id);
    assert_eq!(rec.jobs.len(), 200);
    let v = rec.verdicts();
    assert_eq!(
        (v.succeeded, v.failed, v.lost, v.open),
        (200, 0, 0, 0),
        "{v:?}"
    );
    assert_eq!(
        rec.attempt_of(&victim),
        2,
        "the vanished run was re-submitted once"
    );
    assert_eq!(v.resubmitted, 1);
    // No run has two successful attempts counted.
    for b in &rec.jobs {
        let ok = (1..=rec.attempt_of(b))
            .filter(|k| {
                rec.finished
                    .get(&vast::ops::runs::attempt_name(b, *k))
                    .is_some_and(|r| r.outcome == JobOutcome::Succeeded)
            })
            .count();
        assert_eq!(ok, 1, "run {b}");
    }
    let bucket = vast::ops::run::bucket(&id);
    assert_eq!(
        result_dirs(&out.join(&bucket)),
        200,
        "results of every run in {}",
        out.display()
    );
    assert!(
        c.bucket(&bucket).await.is_empty(),
        "the remote copy is removed"
    );
    let stats = sim_stats(&c).await;
    let preempted = stats["preempted"].as_u64().unwrap_or(0);
    assert!(preempted >= 10, "preemptions happened: {stats}");
    let ended: Vec<Value> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "ended")
        .cloned()
        .collect();
    assert_eq!(ended.len(), 1, "one end event: {ended:?}");
    assert_eq!(ended[0]["outcome"], "succeeded");
    assert_eq!(ended[0]["counts"]["succeeded"], 200);
}

/// A scenario failure (its own exit code) is `failed` at once, never re-submitted by
/// `--follow`; an OOMKilled run is `lost`, re-submitted `execution.retries` times, then stays
/// lost; `rerun --failed` re-submits the failed one into the same run; `wait` then says 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_failures_are_failed_at_once_and_losses_are_resubmitted() {
    let c = start(sim_config(
        json!({"seed": 1, "pods": [
            {"match": "test-fixed-values", "outcome": "fail", "exit_code": 3},
            {"match": "test-1-2-0", "outcome": "oomkilled"}
        ]}),
        100,
    ))
    .await;
    set_retries(&c, 1);
    c.setup_cli("rke2").await;
    let out = c
        .vast(&["execution", "cluster", "run", "-r", "1", "--follow"])
        .await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let id = started(&stderr).expect("run id");
    let rec = record(&c, &id);
    let v = rec.verdicts();
    assert_eq!((v.succeeded, v.failed, v.lost), (3, 1, 1), "{v:?} {rec:?}");
    // The failed run was never re-submitted; the lost one once (retries: 1).
    let failed: Vec<_> = rec
        .latest_outcomes()
        .filter(|(_, _, r)| r.is_some_and(|r| r.outcome == JobOutcome::Failed))
        .collect();
    assert_eq!(failed.len(), 1);
    let (fb, _, fr) = &failed[0];
    assert_eq!(
        rec.attempt_of(fb),
        1,
        "a scenario failure is not re-submitted"
    );
    assert_eq!(fr.unwrap().exit_code, Some(3));
    assert!(
        fr.unwrap()
            .evidence
            .as_deref()
            .is_some_and(|k| k.ends_with("logs/vast-failure.txt")),
        "{fr:?}"
    );
    let lost: Vec<_> = rec
        .latest_outcomes()
        .filter(|(_, _, r)| r.is_some_and(|r| r.outcome == JobOutcome::Lost))
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(
        rec.attempt_of(lost[0].0),
        2,
        "lost once, re-submitted once, lost again"
    );
    assert!(
        lost[0]
            .2
            .unwrap()
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("OOMKilled")),
        "{:?}",
        lost[0].2
    );
    assert!(stdout.contains("1 failed, 1 lost"), "{stdout}");
    // The evidence file is in the bucket beside the results.
    let bucket = c.bucket(&vast::ops::run::bucket(&id)).await;
    let ev = bucket
        .keys()
        .find(|k| k.starts_with("test-fixed-values/0/logs/vast-failure"))
        .cloned();
    let ev = ev.unwrap_or_else(|| panic!("evidence in {:?}", bucket.keys().collect::<Vec<_>>()));
    let body = text(&bucket[&ev]);
    assert!(body.contains("exit code: 3"), "{body}");

    // runs show lists the classes, reasons and evidence.
    let show = c.vast(&["runs", "show", &id]).await;
    let so = text(&show.stdout);
    assert!(
        so.contains("1 failed, 1 lost") && so.contains("evidence: s3://"),
        "{so}"
    );
    // wait: some failed or stayed lost → 1.
    let w = c
        .vast(&["execution", "cluster", "wait", "--run-id", &id, "--json"])
        .await;
    assert_eq!(
        w.status.code(),
        Some(1),
        "{}\n{}",
        text(&w.stdout),
        text(&w.stderr)
    );
    let report: Value = serde_json::from_slice(&w.stdout).unwrap();
    assert_eq!(
        (report["failed"].as_u64(), report["lost"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );

    // rerun --failed: the scenario is fixed (its fault removed), its next attempt succeeds.
    c.sim.faults().set(
        serde_json::from_value(json!({"seed": 1, "pods": [
            {"match": "test-1-2-0", "outcome": "oomkilled"}
        ]}))
        .unwrap(),
    );
    let r = c
        .vast(&["execution", "cluster", "rerun", &id, "--failed"])
        .await;
    assert!(
        r.status.success(),
        "{}\n{}",
        text(&r.stdout),
        text(&r.stderr)
    );
    assert!(
        text(&r.stdout).contains("Re-submitted 1 run"),
        "{}",
        text(&r.stdout)
    );
    let w = c
        .vast(&[
            "execution",
            "cluster",
            "wait",
            "--run-id",
            &id,
            "--timeout",
            "60s",
        ])
        .await;
    // Still one lost run → 1; the failed one now succeeded.
    assert_eq!(
        w.status.code(),
        Some(1),
        "{}\n{}",
        text(&w.stdout),
        text(&w.stderr)
    );
    let rec = record(&c, &id);
    assert_eq!(rec.attempt_of(fb), 2);
    assert_eq!(rec.verdicts().failed, 0);
    // rerun (default --lost): the OOMKilled run once more (lost again: it always OOMs).
    let r = c.vast(&["execution", "cluster", "rerun", &id]).await;
    assert!(r.status.success(), "{}", text(&r.stderr));
    let rec = record(&c, &id);
    assert_eq!(
        rec.attempt_of(lost[0].0),
        3,
        "the record keeps every attempt"
    );
}

/// `wait`'s exit codes: 0 all succeeded, 3 timed out, 4 stalled (naming Kueue's reason),
/// 2 unknown run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exit_codes() {
    let c = start(sim_config(
        json!({"seed": 1, "pods": [{"match": "test-2-2", "outcome": "hang"}]}),
        100,
    ))
    .await;
    c.setup_cli("rke2").await;
    // 2: unknown run.
    let w = c
        .vast(&[
            "execution",
            "cluster",
            "wait",
            "--run-id",
            "run-2026-01-01-000000-zzzz",
        ])
        .await;
    assert_eq!(w.status.code(), Some(2), "{}", text(&w.stderr));
    // 0: a run whose Jobs all succeed.
    let out = c
        .vast(&["execution", "cluster", "run", "-r", "1", "-c", "test-1-1"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ok_id = crate::cluster_support::run_id_of(&text(&out.stdout));
    // Half of its Job listings fail: wait retries at the next poll.
    c.sim.faults().set(serde_json::from_value(json!({"seed": 3, "api": [
        {"verbs": ["list"], "resources": ["jobs"], "rate": 0.5, "action": {"status": {"codes": [503]}}}
    ]})).unwrap());
    let mut cmd = c.command(&[
        "execution",
        "cluster",
        "wait",
        "--run-id",
        &ok_id,
        "--timeout",
        "60s",
    ]);
    cmd.env("VAST_WAIT_POLL_MS", "100");
    let w = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        w.status.code(),
        Some(0),
        "{}\n{}",
        text(&w.stdout),
        text(&w.stderr)
    );
    c.sim.faults().set(
        serde_json::from_value(
            json!({"seed": 1, "pods": [{"match": "test-2-2", "outcome": "hang"}]}),
        )
        .unwrap(),
    );
    // 3: a run that hangs (its deadline is 600 s) outlives --timeout.
    let out = c
        .vast(&["execution", "cluster", "run", "-r", "1", "-c", "test-2-2"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hang_id = crate::cluster_support::run_id_of(&text(&out.stdout));
    let t = Instant::now();
    let w = c
        .vast(&[
            "execution",
            "cluster",
            "wait",
            "--run-id",
            &hang_id,
            "--timeout",
            "2s",
        ])
        .await;
    assert_eq!(
        w.status.code(),
        Some(3),
        "{}\n{}",
        text(&w.stdout),
        text(&w.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    // 4: nothing admitted (the ClusterQueue holds): no Job starts within --stall-timeout.
    let client = c.client();
    vast::cluster::kueue::set_stop_policy(&client, Some("Hold"))
        .await
        .unwrap();
    let out = c
        .vast(&["execution", "cluster", "run", "-r", "1", "-c", "test-1-1"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = crate::cluster_support::run_id_of(&text(&out.stdout));
    let w = c
        .vast(&[
            "execution",
            "cluster",
            "wait",
            "--run-id",
            &held,
            "--stall-timeout",
            "3s",
            "--timeout",
            "60s",
        ])
        .await;
    let so = text(&w.stdout);
    assert_eq!(w.status.code(), Some(4), "{so}\n{}", text(&w.stderr));
    assert!(so.contains("stalled") && so.contains("pending"), "{so}");
    vast::cluster::kueue::set_stop_policy(&client, None)
        .await
        .unwrap();
}

/// `--upload-to-share` with a share configuration that is incomplete fails before any Job
/// (or run) exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_to_a_badly_configured_share_creates_nothing() {
    let c = start(SimConfig::default()).await;
    c.setup_cli("rke2").await;
    let mut cmd = c.command(&[
        "execution",
        "cluster",
        "run",
        "--follow",
        "--upload-to-share",
    ]);
    cmd.env("ROBOVAST_SHARE_TYPE", "nextcloud")
        .env_remove("ROBOVAST_SHARE_URL")
        .env_remove("ROBOVAST_SHARE_PASSWORD")
        .env("XDG_CONFIG_HOME", c.tmp.path().join("xdg"));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("ROBOVAST_SHARE"),
        "{}",
        text(&out.stderr)
    );
    let jobs: Api<Job> = Api::namespaced(c.client(), NS);
    assert!(jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(
        RunRecord::load_all(&c.state).is_empty(),
        "no run was created"
    );
}

/// A campaign whose webhook cannot be reached still ends well (exit 0); a reachable one gets
/// the end event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_notification_receiver_does_not_fail_the_campaign() {
    let c = start(sim_config(json!({}), 100)).await;
    c.setup_cli("rke2").await;
    let out_dir = c.tmp.path().join("dl");
    let out_s = out_dir.display().to_string();
    let mut cmd = c.command(&[
        "execution",
        "cluster",
        "run",
        "-r",
        "1",
        "-c",
        "test-1-1",
        "--follow",
        "--download",
        "-o",
        &out_s,
        "--notify",
        "http://127.0.0.1:9/hook",
    ]);
    cmd.env_remove("VAST_NOTIFY_URL");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("not delivered"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("/hook"),
        "the URL's path is never logged"
    );
    let id = started(&text(&out.stderr)).unwrap();
    assert_eq!(result_dirs(&out_dir.join(vast::ops::run::bucket(&id))), 1);
}

/// A campaign whose scenario failed still collects every result (the failed run's with its
/// evidence) and exits 1, as `wait` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_with_a_failed_scenario_collects_everything_and_exits_1() {
    let c = start(sim_config(
        json!({"seed": 1, "pods": [{"match": "test-fixed-values", "outcome": "fail", "exit_code": 2}]}),
        100,
    ))
    .await;
    c.setup_cli("rke2").await;
    let out_dir = c.tmp.path().join("dl");
    let out_s = out_dir.display().to_string();
    let out = c
        .vast(&[
            "execution",
            "cluster",
            "run",
            "-r",
            "1",
            "--follow",
            "--download",
            "-o",
            &out_s,
        ])
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{stderr}",
        text(&out.stdout)
    );
    assert!(stderr.contains("4 succeeded, 1 failed, 0 lost"), "{stderr}");
    let id = started(&stderr).unwrap();
    let run_dir = out_dir.join(vast::ops::run::bucket(&id));
    assert_eq!(result_dirs(&run_dir), 5);
    assert!(
        run_dir
            .join("test-fixed-values/0/logs/vast-failure.txt")
            .is_file(),
        "the evidence came home with the results"
    );
}

/// The `rerun` workflow's steps are idempotent: run twice (every body executed a second
/// time), and crashed after every journal record and resumed, each rerun creates exactly the
/// next attempt of the lost run: never a duplicate, never a gap, never an unrecorded Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_steps_run_twice_and_crashed_create_each_attempt_once() {
    use vast::engine::{EngineOptions, Outcome};
    let c = start(sim_config(
        json!({"seed": 1, "pods": [{"match": "test-1-2-0", "outcome": "oomkilled"}]}),
        100,
    ))
    .await;
    set_retries(&c, 0);
    c.setup_cli("rke2").await;
    let out = c.vast(&["execution", "cluster", "run", "-r", "1"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = crate::cluster_support::run_id_of(&text(&out.stdout));
    let bucket = vast::ops::run::bucket(&id);
    let view = vast::store::StateDir::new(c.state.clone())
        .snapshot(&id)
        .unwrap()
        .unwrap();
    let old: Value = serde_json::from_str(&view.params).unwrap();
    let mut params = json!({"target": id, "lost": true, "failed": false});
    for k in [
        "context",
        "namespace",
        "state_dir",
        "vast_file",
        "vast_sha256",
        "config",
        "runs",
        "log_tree",
        "cluster_config",
        "created_at",
    ] {
        params[k] = old[k].clone();
    }
    let jobs: Api<Job> = Api::namespaced(c.client(), NS);
    // Every run's Jobs in the cluster are exactly its attempts 1..=k of the record.
    let check = |what: String| {
        let jobs = jobs.clone();
        let c = &c;
        let id = id.clone();
        let bucket = bucket.clone();
        async move {
            let rec = record(c, &id);
            let names: std::collections::BTreeSet<String> = jobs
                .list(&ListParams::default().labels(&format!("run-id={bucket}")))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|j| j.metadata.name)
                .collect();
            let want: std::collections::BTreeSet<String> = rec
                .jobs
                .iter()
                .flat_map(|b| (1..=rec.attempt_of(b)).map(|k| vast::ops::runs::attempt_name(b, k)))
                .collect();
            assert_eq!(names, want, "{what}");
            rec
        }
    };
    c.wait_jobs_done(&bucket, 30).await;
    let opts = EngineOptions {
        run_twice: true,
        ..Default::default()
    };
    let (_, o) = c.execute("rerun", &params, opts).await;
    assert_eq!(o, Outcome::Succeeded);
    let rec = check("run twice".into()).await;
    let lost = rec
        .jobs
        .iter()
        .find(|b| rec.attempt_of(b) == 2)
        .cloned()
        .expect("one run re-submitted");
    let mut attempt = 2;
    for n in 1..12u64 {
        c.wait_jobs_done(&bucket, 30).await;
        let opts = EngineOptions {
            crash_after: Some(n),
            ..Default::default()
        };
        let (rid, o) = c.execute("rerun", &params, opts).await;
        if matches!(&o, Outcome::Failed(m) if m.contains("injected crash")) {
            let o = c.resume_with(&rid, c.resources()).await;
            assert_eq!(o, Outcome::Succeeded, "n={n}");
        } else {
            assert_eq!(o, Outcome::Succeeded, "n={n}");
        }
        attempt += 1;
        let rec = check(format!("crash after {n}")).await;
        assert_eq!(
            rec.attempt_of(&lost),
            attempt,
            "n={n}: one new attempt per rerun"
        );
    }
}

/// Every step of the campaign workflow runs twice (each body executed a second time, the
/// engine's idempotence check): the campaign still ends with one Job per run, every result
/// downloaded once and the remote copy removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_steps_run_twice() {
    use vast::engine::{EngineOptions, Outcome};
    let c = start(sim_config(
        json!({"seed": 2, "preempt": {"fraction": 0.3}}),
        100,
    ))
    .await;
    c.setup_in_process("rke2").await;
    let out_dir = c.tmp.path().join("twice");
    let mut params = c.run_params(1, true);
    for (k, v) in [
        ("campaign", json!(true)),
        ("output", json!(out_dir.display().to_string())),
        ("remove_after", json!("extract")),
        ("report_from", json!("remove")),
        ("summary", json!("download")),
    ] {
        params[k] = v;
    }
    let opts = EngineOptions {
        run_twice: true,
        ..Default::default()
    };
    let mut resources = c.resources();
    resources.insert(vast::ops::results::Display(vast::progress::Mode::detect(
        false, false,
    )));
    let (id, o) = c
        .execute_with(
            &vast::engine::RunId::generate("run"),
            "campaign",
            &params,
            opts,
            resources,
        )
        .await;
    assert_eq!(o, Outcome::Succeeded);
    let rec = record(&c, &id);
    assert_eq!(rec.verdicts().succeeded, 5);
    assert!(rec.attempts.is_empty(), "nothing was re-submitted: {rec:?}");
    assert_eq!(result_dirs(&out_dir.join(vast::ops::run::bucket(&id))), 5);
    assert!(c.bucket(&vast::ops::run::bucket(&id)).await.is_empty());
}
