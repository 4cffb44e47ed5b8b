//! Resume of the cluster operations: for setup, run and cleanup, a crash is injected after
//! every journal record (the engine's `crash_after`) and the run resumed; the real binary is
//! SIGKILLed at random moments while it runs and resumes. The final cluster state must equal
//! an uninterrupted run's: the same Jobs (none missing, none duplicated, none of another run),
//! the same bucket content, the ClusterQueue never left stopped.
//!
//! The failpoint tests configure the `fail` registry of this process: they rely on nextest
//! running every test in its own process (`cargo nextest run --all-features`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;
use vast::engine::view::RunView;
use vast::engine::{Engine, EngineOptions, Outcome, RunId};
use vast::store::StateDir;
use vast_sim::config::SimConfig;

use super::cluster_support::{start, text, Cluster, World, NS};

/// The saved setup of the tests' context (`setup_key` "vast-sim").
const SETUP_FILE: &str = ".robovast_cluster_config.vast-sim";

fn opts_crash_after(n: u64) -> EngineOptions {
    EngineOptions {
        crash_after: Some(n),
        ..Default::default()
    }
}

/// sled's "could not acquire lock" (`WouldBlock`) on a database this process closed a moment
/// ago: sled 0.34 releases its lock from a background thread after `Db` is dropped (see
/// [`reopening_a_just_closed_run_in_the_same_process_works`]).
fn is_sled_lock_race(e: &vast::store::StoreError) -> bool {
    let m = format!("{e:?}");
    m.contains("could not acquire lock") && m.contains("WouldBlock")
}

/// Opens run `id` (for execution, or for reading), retrying the sled lock race for up to 2 s.
fn open_run(c: &Cluster, id: &str, reading: bool) -> vast::store::RunStore {
    open_run_at(&StateDir::new(c.state.clone()), id, reading)
}

fn open_run_in(dir: &StateDir, id: &str) -> vast::store::RunStore {
    open_run_at(dir, id, false)
}

fn open_run_at(dir: &StateDir, id: &str, reading: bool) -> vast::store::RunStore {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = if reading {
            dir.open_run_for_reading(id)
        } else {
            dir.open_run(id)
        };
        match r {
            Ok(s) => return s,
            Err(e) if is_sled_lock_race(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open run {id}: {e:?}"),
        }
    }
}

/// Journal records of run `id` (RunCreated and RunFinished included).
fn journal_len(c: &Cluster, id: &str) -> u64 {
    open_run(c, id, true).load().expect("load run").events
}

/// [`Cluster::resume`], with the run opened through [`open_run`] (`Cluster::resume` unwraps
/// the first open and so fails on the sled lock race).
async fn resume(c: &Cluster, id: &str) -> Outcome {
    let (_, out) = execute_watching(c, "", &Value::Null, Some(id), |_| false).await;
    out
}

/// The snapshot `vast runs show` reads.
fn snapshot(c: &Cluster, id: &str) -> Option<RunView> {
    StateDir::new(c.state.clone()).snapshot(id).ok().flatten()
}

fn step_view<'a>(v: &'a RunView, key: &str) -> Option<&'a vast::engine::view::StepView> {
    v.steps.iter().find(|s| s.key == key)
}

/// Whether `outcome` is the injected crash (the engine's executor stopped on the failed
/// journal append).
fn is_injected_crash(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(m) if m.contains("injected crash"))
}

/// Executes a new run of `operation` (or resumes `resume`) in-process, calling `watch` with the
/// run's snapshot every 50 ms; when it returns true, the run is cancelled (Ctrl-C). Returns the
/// run id and the outcome.
async fn execute_watching(
    c: &Cluster,
    operation: &str,
    params: &Value,
    resume: Option<&str>,
    mut watch: impl FnMut(&RunView) -> bool,
) -> (String, Outcome) {
    let dir = StateDir::new(c.state.clone());
    let mut resources = vast::engine::Resources::default();
    resources.insert(c.env());
    resources.insert(vast::ops::run::ProjectCache::default());
    let engine = Engine::new(vast::ops::registry(), resources);
    let (id, store) = match resume {
        Some(id) => (id.to_string(), open_run(c, id, false)),
        None => {
            let def = vast::ops::definition(operation).unwrap().unwrap();
            let id = RunId::generate(operation);
            let store = engine.create_as(&dir, &id, &def, params).unwrap();
            (id.as_str().to_string(), store)
        }
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let exec = engine.execute(store, cancel.clone());
    let watcher = async {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if cancel.is_cancelled() {
                return;
            }
            if let Some(v) = dir.snapshot(&id).ok().flatten() {
                if watch(&v) {
                    cancel.cancel();
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "run {id}: the watched condition never held"
            );
        }
    };
    tokio::pin!(exec);
    tokio::pin!(watcher);
    let mut watching = true;
    let outcome = loop {
        tokio::select! {
            r = &mut exec => break r.unwrap_or_else(|e| Outcome::Failed(e.to_string())),
            _ = &mut watcher, if watching => watching = false,
        }
    };
    (id.clone(), outcome)
}

/// The world after an uninterrupted setup.
fn assert_set_up(c: &Cluster, w: &World, what: &str) {
    assert_eq!(w.robovast_pod.as_deref(), Some("Running"), "{what}: {w:?}");
    assert!(
        w.service && w.secret && w.cluster_queue && w.local_queue,
        "{what}: {w:?}"
    );
    assert_eq!(w.stop_policy, None, "{what}: {w:?}");
    assert!(w.jobs.is_empty(), "{what}: {w:?}");
    assert!(
        c.project.join(SETUP_FILE).is_file(),
        "{what}: the saved setup is missing"
    );
}

async fn setup(c: &Cluster) {
    let (id, out) = c
        .execute("setup", &c.setup_params("rke2"), Default::default())
        .await;
    assert_eq!(out, Outcome::Succeeded, "setup {id}");
}

/// Names of the Jobs a run of the growth_sim project must have (`runs` runs per config).
fn expected_jobs(c: &Cluster, run_id: &str, runs: u32) -> BTreeSet<String> {
    let vast =
        vast::project::VastFile::load(&c.project.join("growth_sim.vast")).expect("vast file");
    let configs = vast::project::generate(&vast).expect("configs");
    assert_eq!(configs.len(), 5, "growth_sim has 5 configurations");
    let mut out = BTreeSet::new();
    for r in 0..runs {
        for conf in &configs {
            out.insert(vast::manifests::job::job_name(run_id, &conf.name, r));
        }
    }
    out
}

fn config_names(c: &Cluster) -> Vec<String> {
    let vast =
        vast::project::VastFile::load(&c.project.join("growth_sim.vast")).expect("vast file");
    vast::project::generate(&vast)
        .expect("configs")
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// The Jobs labelled with `run_id`, as listed (a name listed twice would show here).
async fn jobs_of(c: &Cluster, run_id: &str) -> Vec<(String, String)> {
    let jobs: Api<Job> = Api::namespaced(c.client(), NS);
    let mut out: Vec<(String, String)> = jobs
        .list(&ListParams::default().labels(&format!("run-id={}", vast::ops::run::bucket(run_id))))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|j| {
            (
                j.metadata.name.unwrap_or_default(),
                j.metadata.uid.unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The Jobs of `run_id` are exactly `expected`: none missing, none duplicated (by name or by
/// uid), and every Job in the cluster belongs to one of `known` runs.
async fn assert_jobs(
    c: &Cluster,
    run_id: &str,
    expected: &BTreeSet<String>,
    known: &BTreeSet<String>,
    what: &str,
) {
    let listed = jobs_of(c, run_id).await;
    let names: Vec<&String> = listed.iter().map(|(n, _)| n).collect();
    let uids: BTreeSet<&String> = listed.iter().map(|(_, u)| u).collect();
    assert_eq!(
        names.iter().map(|n| (*n).clone()).collect::<BTreeSet<_>>(),
        *expected,
        "{what}: Jobs of {run_id}"
    );
    assert_eq!(
        names.len(),
        expected.len(),
        "{what}: duplicated Jobs {names:?}"
    );
    assert_eq!(
        uids.len(),
        expected.len(),
        "{what}: duplicated uids {listed:?}"
    );
    let w = c.world().await;
    let labels: BTreeSet<String> = known.iter().map(|k| vast::ops::run::bucket(k)).collect();
    for run in w.jobs.keys() {
        assert!(
            labels.contains(run),
            "{what}: Jobs of an unknown run '{run}' appeared: {w:?}"
        );
    }
    // The run's record lists the same Jobs.
    let record = vast::ops::runs::RunRecord::load(&c.state, run_id)
        .expect("record")
        .expect("the run wrote its record");
    assert_eq!(
        record.jobs.iter().cloned().collect::<BTreeSet<_>>(),
        *expected,
        "{what}: record of {run_id}"
    );
    assert_eq!(
        record.jobs.len(),
        expected.len(),
        "{what}: record of {run_id}"
    );
}

/// Whether `key` is a result file the simulated scenario pod writes whose bytes embed the pod's
/// (run-specific) name: `<config>/<run>/sysinfo.yaml` and `<config>/<run>/logs/*.log`.
fn pod_specific(configs: &[String], key: &str) -> bool {
    configs.iter().any(|conf| {
        key.strip_prefix(conf.as_str())
            .and_then(|k| k.strip_prefix('/'))
            .and_then(|k| k.split_once('/'))
            .is_some_and(|(n, rest)| {
                n.parse::<u32>().is_ok() && (rest == "sysinfo.yaml" || rest.starts_with("logs/"))
            })
    })
}

/// A bucket as two runs can be compared by: every key, and the bytes of every key except the
/// pod-specific result files and `skip` (files that embed the run's creation time).
fn comparable(
    configs: &[String],
    bucket: &BTreeMap<String, Vec<u8>>,
    skip: &[&str],
) -> BTreeMap<String, Option<String>> {
    bucket
        .iter()
        .map(|(k, v)| {
            let bytes = (!pod_specific(configs, k) && !skip.contains(&k.as_str()))
                .then(|| String::from_utf8_lossy(v).into_owned());
            (k.clone(), bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_resumes_after_a_crash_at_every_journal_record() {
    let t0 = Instant::now();
    let base = start(SimConfig::default()).await;
    let (bid, out) = base
        .execute("setup", &base.setup_params("rke2"), Default::default())
        .await;
    assert_eq!(out, Outcome::Succeeded);
    let expected = base.world().await;
    assert_set_up(&base, &expected, "baseline");
    let records = journal_len(&base, &bid);
    assert!(records >= 18, "8 steps: {records} records");
    drop(base);

    let mut crashed = 0;
    for n in 1..records - 1 {
        let c = start(SimConfig::default()).await;
        let params = c.setup_params("rke2");
        let (id, out) = c.execute("setup", &params, opts_crash_after(n)).await;
        assert!(is_injected_crash(&out), "n={n}: {out:?}");
        assert_eq!(journal_len(&c, &id), n + 1, "n={n}: RunCreated + n records");
        crashed += 1;
        let out = resume(&c, &id).await;
        assert_eq!(out, Outcome::Succeeded, "n={n}");
        let w = c.world().await;
        assert_eq!(w, expected, "n={n}");
        assert_set_up(&c, &w, &format!("n={n}"));
        // One credentials Secret whose keys the resumed run kept (or created once).
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.client(), NS);
        let s = secrets.get("vast-s3-credentials").await.unwrap();
        assert!(
            s.data
                .is_some_and(|d| d.contains_key("access-key") && d.contains_key("secret-key")),
            "n={n}"
        );
        // The saved setup is the one an uninterrupted setup writes.
        let saved = std::fs::read_to_string(c.project.join(SETUP_FILE)).unwrap();
        assert!(saved.contains("rke2"), "n={n}: {saved}");
    }
    eprintln!(
        "setup: {records} journal records, {crashed} crash points, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_resumes_after_a_crash_at_every_journal_record() {
    let t0 = Instant::now();
    let c = start(SimConfig::default()).await;
    setup(&c).await;
    let configs = config_names(&c);
    let params = c.run_params(1, false);
    let mut known = BTreeSet::new();

    let (bid, out) = c.execute("run", &params, Default::default()).await;
    assert_eq!(out, Outcome::Succeeded, "baseline");
    known.insert(bid.clone());
    let records = journal_len(&c, &bid);
    assert_jobs(&c, &bid, &expected_jobs(&c, &bid, 1), &known, "baseline").await;
    c.wait_jobs_done(&bid, 30).await;
    let baseline = c.bucket(&vast::ops::run::bucket(&bid)).await;
    assert!(
        baseline.contains_key("execution.yaml")
            && baseline.contains_key("_config/configurations.yaml"),
        "{:?}",
        baseline.keys()
    );
    let baseline = comparable(&configs, &baseline, &[]);
    assert!(records > 20, "{records}");

    let mut crashed = 0;
    for n in 1..records - 1 {
        let (id, out) = c.execute("run", &params, opts_crash_after(n)).await;
        known.insert(id.clone());
        if !is_injected_crash(&out) {
            // This execution journaled fewer records than the baseline's (it may differ by a
            // retried attempt): it succeeded before record n+1.
            assert_eq!(out, Outcome::Succeeded, "n={n}");
            assert!(journal_len(&c, &id) <= n + 1, "n={n}: {out:?}");
        } else {
            assert_eq!(journal_len(&c, &id), n + 1, "n={n}");
            crashed += 1;
            let out = resume(&c, &id).await;
            assert_eq!(out, Outcome::Succeeded, "n={n}");
        }
        let what = format!("n={n}");
        assert_jobs(&c, &id, &expected_jobs(&c, &id, 1), &known, &what).await;
        c.wait_jobs_done(&id, 30).await;
        let b = c.bucket(&vast::ops::run::bucket(&id)).await;
        let b = comparable(&configs, &b, &[]);
        assert_eq!(b, baseline, "{what}: bucket of {id}");
        // Every Job's pod succeeded (a Job started before its inputs were uploaded fails).
        for conf in &configs {
            let junit = b.get(&format!("{conf}/0/test.xml")).cloned().flatten();
            assert!(
                junit
                    .as_deref()
                    .is_some_and(|j| j.contains("failures=\"0\"")),
                "{what}: {conf}: {junit:?}"
            );
        }
    }
    eprintln!(
        "run: {records} journal records, {crashed} crash points, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// What an uninterrupted cleanup leaves: nothing of setup's, no Jobs, no Workloads, no scenario
/// pods, no saved setup.
async fn assert_cleaned(c: &Cluster, w: &World, what: &str) {
    assert_eq!(w.robovast_pod, None, "{what}: {w:?}");
    assert!(
        !w.service && !w.secret && !w.cluster_queue && !w.local_queue,
        "{what}: {w:?}"
    );
    assert!(w.jobs.is_empty(), "{what}: {w:?}");
    let wls = vast::cluster::kueue::workloads(&c.client(), Some(NS))
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        wls.items.is_empty(),
        "{what}: workloads left: {:?}",
        wls.items.len()
    );
    let pods: Api<Pod> = Api::namespaced(c.client(), NS);
    let left = pods
        .list(&ListParams::default().labels("jobgroup=scenario-runs"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "{what}: scenario pods left");
    assert!(
        !c.project.join(SETUP_FILE).exists(),
        "{what}: the saved setup is still there"
    );
}

/// A fresh cluster, set up, with a detached run whose Jobs (and Workloads) exist.
async fn cluster_with_a_run() -> (Cluster, String) {
    let c = start(SimConfig::default()).await;
    setup(&c).await;
    let (id, out) = c
        .execute("run", &c.run_params(1, false), Default::default())
        .await;
    assert_eq!(out, Outcome::Succeeded);
    assert_eq!(c.world().await.jobs[&id].len(), 5);
    (c, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_resumes_after_a_crash_at_every_journal_record() {
    let t0 = Instant::now();
    let (base, _) = cluster_with_a_run().await;
    let wls = vast::cluster::kueue::workloads(&base.client(), Some(NS))
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(!wls.items.is_empty(), "the run's Jobs have Workloads");
    let (bid, out) = base
        .execute("cleanup", &base.cleanup_params("rke2"), Default::default())
        .await;
    assert_eq!(out, Outcome::Succeeded);
    let expected = base.world().await;
    assert_cleaned(&base, &expected, "baseline").await;
    let records = journal_len(&base, &bid);
    assert!(records >= 10, "{records}");
    drop(base);

    let mut crashed = 0;
    let mut policies = BTreeMap::new();
    for n in 1..records - 1 {
        let (c, _) = cluster_with_a_run().await;
        let (id, out) = c
            .execute("cleanup", &c.cleanup_params("rke2"), opts_crash_after(n))
            .await;
        assert!(is_injected_crash(&out), "n={n}: {out:?}");
        assert_eq!(journal_len(&c, &id), n + 1, "n={n}");
        crashed += 1;
        // Between the crash and the resume: the queue's policy, if it still exists.
        let w = c.world().await;
        if w.cluster_queue {
            policies.insert(n, w.stop_policy.clone());
        }
        let out = resume(&c, &id).await;
        assert_eq!(out, Outcome::Succeeded, "n={n}");
        let w = c.world().await;
        assert_eq!(w, expected, "n={n}");
        assert_cleaned(&c, &w, &format!("n={n}")).await;
    }
    eprintln!(
        "cleanup: {records} journal records, {crashed} crash points, ClusterQueue policy after the crash (where it existed): {policies:?}, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// `cleanup.drain` fails after the queue was held and the runs removed: each failed attempt
/// restores the policy; the resumed run (failpoint removed) succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_drain_failure_restores_the_queue_and_resumes() {
    let scenario = fail::FailScenario::setup();
    let (c, run) = cluster_with_a_run().await;
    fail::cfg("cleanup.drain.removed", "return(boom)").unwrap();
    // Two failed attempts of drain, then Ctrl-C (the step waits for its third attempt).
    let (id, out) = execute_watching(&c, "cleanup", &c.cleanup_params("rke2"), None, |v| {
        step_view(v, "drain").is_some_and(|s| s.errors.len() >= 2)
    })
    .await;
    assert_eq!(out, Outcome::Interrupted, "{id}");
    let v = snapshot(&c, &id).unwrap();
    let drain = step_view(&v, "drain").unwrap();
    assert!(
        drain.errors.len() >= 2
            && drain
                .errors
                .iter()
                .all(|e| e.message.contains("failpoint cleanup.drain.removed: boom")),
        "{drain:?}"
    );
    let w = c.world().await;
    assert!(w.cluster_queue, "{w:?}");
    assert_ne!(w.stop_policy.as_deref(), Some("HoldAndDrain"), "{w:?}");
    assert_eq!(w.stop_policy, None, "restored to what it was: {w:?}");
    assert!(!w.jobs.contains_key(&run), "the runs were removed: {w:?}");
    assert!(w.robovast_pod.is_some(), "later steps did not run: {w:?}");

    fail::remove("cleanup.drain.removed");
    let out = resume(&c, &id).await;
    assert_eq!(out, Outcome::Succeeded);
    let w = c.world().await;
    assert_cleaned(&c, &w, "resumed").await;
    scenario.teardown();
}

/// `cleanup.drain` panics (a crash in the middle of the step) while the queue is held; the
/// resumed run restores the policy from the step's cursor, not the held one it finds.
async fn drain_panics_then_resume_restores(previous: Option<&str>) {
    let scenario = fail::FailScenario::setup();
    let (c, _) = cluster_with_a_run().await;
    if let Some(p) = previous {
        vast::cluster::kueue::set_stop_policy(&c.client(), Some(p))
            .await
            .unwrap();
    }
    assert_eq!(c.world().await.stop_policy.as_deref(), previous);
    fail::cfg("cleanup.drain.removed", "panic").unwrap();
    let (id, out) = c
        .execute("cleanup", &c.cleanup_params("rke2"), Default::default())
        .await;
    // The engine turns a panicking step into an executor error: the run stops, resumable,
    // with the step still Started.
    assert!(
        matches!(&out, Outcome::Failed(m) if m.contains("a step task failed")),
        "{out:?}"
    );
    let w = c.world().await;
    assert_eq!(
        w.stop_policy.as_deref(),
        Some("HoldAndDrain"),
        "the crash left the queue held: {w:?}"
    );
    fail::remove("cleanup.drain.removed");

    // Resume while the next step (cleanup.kueue, which deletes the queue) fails: drain
    // succeeds and the policy it restored can be seen.
    fail::cfg("cleanup.kueue", "return(not yet)").unwrap();
    let (_, out) = execute_watching(&c, "", &Value::Null, Some(&id), |v| {
        step_view(v, "drain").is_some_and(|s| s.status == "succeeded")
            && step_view(v, "kueue").is_some_and(|s| !s.errors.is_empty())
    })
    .await;
    assert_eq!(out, Outcome::Interrupted);
    let w = c.world().await;
    assert!(w.cluster_queue, "{w:?}");
    assert_eq!(
        w.stop_policy.as_deref(),
        previous,
        "the resumed drain restored the policy it found first: {w:?}"
    );
    assert!(w.jobs.is_empty(), "{w:?}");
    let drain_cursor = snapshot(&c, &id)
        .and_then(|v| step_view(&v, "drain").and_then(|s| s.cursor.clone()))
        .unwrap_or_default();
    assert!(drain_cursor.contains("previous"), "{drain_cursor}");

    fail::remove("cleanup.kueue");
    let out = resume(&c, &id).await;
    assert_eq!(out, Outcome::Succeeded);
    let w = c.world().await;
    assert_cleaned(&c, &w, "resumed").await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_drain_panic_while_held_is_restored_on_resume() {
    drain_panics_then_resume_restores(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_drain_panic_restores_a_preexisting_hold_on_resume() {
    drain_panics_then_resume_restores(Some("Hold")).await;
}

/// Runs directories under the state directory.
fn run_ids(state: &Path) -> BTreeSet<String> {
    StateDir::new(state.to_path_buf())
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// Spawns the binary with its output in files; SIGKILLs it after `kill_after` (None: waits up
/// to 60 s for it to exit). Returns (exited by itself with this status, stdout, stderr).
async fn spawn_and_maybe_kill(
    c: &Cluster,
    args: &[&str],
    kill_after: Option<Duration>,
    tag: &str,
) -> (Option<std::process::ExitStatus>, String, String) {
    let out_path = c.tmp.path().join(format!("{tag}.out"));
    let err_path = c.tmp.path().join(format!("{tag}.err"));
    let mut cmd = c.command(args);
    cmd.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().expect("spawn vast");
    let started = Instant::now();
    let limit = kill_after.unwrap_or(Duration::from_secs(60));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() >= limit {
            if kill_after.is_none() {
                panic!("{args:?} did not finish in 60 s");
            }
            // Not reaped yet: the pid is still this child's (a zombie at worst).
            let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill");
            child.wait().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    (
        status,
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

fn started_id(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let rest = l.strip_prefix("run ")?;
        let (id, tail) = rest.split_once(' ')?;
        tail.starts_with("started (resume with")
            .then(|| id.to_string())
    })
}

fn detached_run_id(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("✓ Jobs created successfully (Run ID: "))
        .and_then(|l| l.strip_suffix(')'))
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_torture_run_and_resume() {
    use rand::Rng;
    let t0 = Instant::now();
    let c = start(SimConfig::default()).await;
    let out = c.vast(&["execution", "cluster", "setup", "rke2"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let configs = config_names(&c);
    let args = ["execution", "cluster", "run", "-r", "3"];
    let t = Instant::now();
    let out = c.vast(&args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Kills land anywhere in an uninterrupted run's duration (about 400 ms here).
    let window = (t.elapsed().as_millis() as u64).max(100);
    let bid = detached_run_id(&text(&out.stdout)).expect("run id");
    let mut known: BTreeSet<String> = BTreeSet::from([bid.clone()]);
    assert_jobs(&c, &bid, &expected_jobs(&c, &bid, 3), &known, "baseline").await;
    c.wait_jobs_done(&bid, 60).await;
    // execution.yaml and configurations.yaml embed the run's creation time.
    let timed = ["execution.yaml", "_config/configurations.yaml"];
    let baseline = c.bucket(&vast::ops::run::bucket(&bid)).await;
    for k in timed {
        assert!(baseline.contains_key(k), "{k}: {:?}", baseline.keys());
    }
    let baseline = comparable(&configs, &baseline, &timed);

    let mut rng = rand::rng();
    let (mut kills, mut lost_starts, mut spawns, mut half_created) = (0u32, 0u32, 0u32, 0u32);
    let (mut killed_resumes, mut stale_snapshots) = (0u32, 0u32);
    // Until 10 runs were killed (once or more) while they existed; runs that finished before
    // their kill are checked too.
    let (want, mut interrupted, mut i) = (10u32, 0u32, 0u32);
    while interrupted < want {
        i += 1;
        assert!(i <= 40, "only {interrupted} of {i} runs were interrupted");
        let mut was_killed = false;
        // Start a run and kill it at a random moment; start over if no run was created.
        let id = loop {
            let before = run_ids(&c.state);
            let delay = Duration::from_millis(rng.random_range(0..window));
            spawns += 1;
            let (status, stdout, stderr) =
                spawn_and_maybe_kill(&c, &args, Some(delay), &format!("start-{spawns}")).await;
            if status.is_none() {
                kills += 1;
            }
            let mut created: Vec<String> = run_ids(&c.state).difference(&before).cloned().collect();
            let printed = started_id(&stderr);
            if let Some(p) = &printed {
                assert_eq!(created, vec![p.clone()], "{stderr}");
            }
            assert!(created.len() <= 1, "{created:?}");
            if status.is_none() && printed.is_none() && !created.is_empty() {
                // Killed while creating the run: with its RunCreated record written it is a
                // run (resumed below); without, its directory is left behind and cannot be
                // opened (see the ignored test below): the run was never created.
                // (Killed before sled created its files, the open creates them and succeeds,
                // the journal is empty: `load` fails.)
                let dir = StateDir::new(c.state.clone());
                let header = dir
                    .open_run_for_reading(&created[0])
                    .and_then(|store| store.load().map(|_| ()));
                if let Err(e) = header {
                    eprintln!("killed before the run's first record: {e}");
                    half_created += 1;
                    created.clear();
                }
            }
            match (status, created.into_iter().next()) {
                (Some(s), Some(id)) => {
                    // Finished before the kill.
                    assert!(s.success(), "{stdout}{stderr}");
                    assert_eq!(detached_run_id(&stdout).as_deref(), Some(id.as_str()));
                    break id;
                }
                (Some(s), None) => panic!("{s}: no run created: {stdout}{stderr}"),
                (None, Some(id)) => {
                    was_killed = true;
                    break id;
                }
                (None, None) => lost_starts += 1,
            }
        };
        known.insert(id.clone());
        // Resume it, killing some resumes at random moments, until one exits 0.
        let mut n = 0;
        loop {
            n += 1;
            let kill = (n <= 3 && rng.random_bool(0.6))
                .then(|| Duration::from_millis(rng.random_range(0..window / 2)));
            spawns += 1;
            let (status, stdout, stderr) =
                spawn_and_maybe_kill(&c, &["resume", &id], kill, &format!("resume-{spawns}")).await;
            match status {
                None => {
                    kills += 1;
                    killed_resumes += 1;
                    was_killed = true;
                }
                Some(s) if s.success() => break,
                Some(s) => panic!("run {i} ({id}): resume #{n} exited {s}: {stdout}{stderr}"),
            }
        }
        let what = format!("run {i} ({id})");
        let state = open_run(&c, &id, true).load().expect("load");
        assert_eq!(
            state.status,
            vast::engine::journal::RunStatus::Succeeded,
            "{what}"
        );
        // A kill between RunFinished and the final snapshot leaves the snapshot (what
        // `runs list` shows) behind, and no resume refreshes it (see the ignored test below).
        let v = snapshot(&c, &id).expect("snapshot");
        if v.status != "succeeded" {
            stale_snapshots += 1;
        }
        assert_jobs(&c, &id, &expected_jobs(&c, &id, 3), &known, &what).await;
        c.wait_jobs_done(&id, 60).await;
        let b = c.bucket(&vast::ops::run::bucket(&id)).await;
        let b = comparable(&configs, &b, &timed);
        assert_eq!(b, baseline, "{what}: bucket");
        for conf in &configs {
            for r in 0..3 {
                let junit = b.get(&format!("{conf}/{r}/test.xml")).cloned().flatten();
                assert!(
                    junit
                        .as_deref()
                        .is_some_and(|j| j.contains("failures=\"0\"")),
                    "{what}: {conf}/{r}: {junit:?}"
                );
            }
        }
        interrupted += u32::from(was_killed);
    }
    eprintln!(
        "kill -9: {i} runs ({interrupted} killed while they existed), {spawns} processes, {kills} SIGKILLs ({killed_resumes} of resumes; window {window} ms), {lost_starts} starts killed before a run existed ({half_created} of them during its creation), {stale_snapshots} stale snapshots of succeeded runs, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// `vast execution cluster run` SIGKILLed between `StateDir::create_run` (the run's directory
/// and database) and the append of its `RunCreated` record leaves a directory that every later
/// command reports as a corrupt run (`vast resume`/`runs show`: "the run database ... is
/// corrupt (no records readable ...)"; `runs list`: "no snapshot yet"), forever. The kill -9
/// torture test hit it. The run was never created (its id was not even printed): it does not
/// exist (fixed: the directory carries a `creating` marker until its first record is durable).
#[test]
fn a_run_killed_before_its_first_journal_record_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::new(tmp.path().to_path_buf());
    let id = RunId::generate("run");
    // What a SIGKILL right after create_run leaves (the store is closed without a record).
    drop(dir.create_run(&id).unwrap());
    let opened = dir.open_run(id.as_str());
    assert!(
        matches!(opened, Err(vast::store::StoreError::UnknownRun { .. })),
        "{:?}",
        opened.err()
    );
    assert!(
        dir.list().unwrap().iter().all(|e| e.id != id.as_str()),
        "listed"
    );
}

/// sled 0.34 keeps a database's file lock (`<db>/db`, `try_lock_exclusive`) in its `Config`,
/// which work queued on sled's process-wide thread pool (log buffer writes,
/// `pagecache/iobuf.rs`) still references after the `Db` is dropped (spacejam/sled#1234,
/// #1289). A run closed by this process and opened again at once can then fail with
/// `State(Open { .. "could not acquire lock on .../db/db": WouldBlock })`, although the run's
/// own lease was released and taken again. Found as a flaky failure of
/// `setup_resumes_after_a_crash_at_every_journal_record` (reopening a run right after its
/// crashed execution; `Cluster::resume` unwraps that open, so this file opens runs through
/// [`open_run`], which retries). Timing-dependent: with other runs keeping the pool busy this
/// loop fails in most executions (3-6 of 600 reopens), but it can pass by luck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_a_just_closed_run_in_the_same_process_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::new(tmp.path().to_path_buf());
    let def = vast::ops::definition("selftest").unwrap().unwrap();
    let ledger = tmp.path().join("ledger");
    let params =
        serde_json::json!({"items": 64, "ledger": ledger.display().to_string(), "chunks": 2});
    // Other runs writing meanwhile keep sled's shared background thread pool busy (as the
    // runs of the crash-after tests are).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut busy = Vec::new();
    for b in 0..2 {
        let (stop, def, dir) = (
            stop.clone(),
            def.clone(),
            StateDir::new(tmp.path().join(format!("busy-{b}"))),
        );
        let params = serde_json::json!({"items": 64, "ledger": tmp.path().join(format!("busy-{b}.ledger")).display().to_string(), "chunks": 4});
        busy.push(tokio::spawn(async move {
            let engine = Engine::new(vast::ops::registry(), Default::default());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let store = engine.create(&dir, &def, &params).unwrap();
                let _ = engine
                    .execute(store, tokio_util::sync::CancellationToken::new())
                    .await;
            }
        }));
    }
    let mut failures = Vec::new();
    for i in 0..200u64 {
        let mut engine = Engine::new(vast::ops::registry(), Default::default());
        engine.options.crash_after = Some(1 + (i * 7) % 150);
        let id = RunId::parse(&format!("selftest-{i}")).unwrap();
        let store = engine.create_as(&dir, &id, &def, &params).unwrap();
        let _ = engine
            .execute(store, tokio_util::sync::CancellationToken::new())
            .await;
        // What `Cluster::resume` does right after the crashed execution (and again after
        // closing it, as the next resume would).
        for j in 0..3 {
            match dir.open_run(id.as_str()) {
                Ok(store) => {
                    let _ = store.load();
                }
                Err(e) => failures.push(format!("{i}.{j}: {e:?}")),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.await.unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of 600 reopens failed: {failures:#?}",
        failures.len()
    );
}

/// A SIGKILL after a run's `RunFinished` record and before its final snapshot (the record is
/// flushed first, then the snapshot written: `Engine::execute`, src/engine/executor.rs) leaves
/// the snapshot of an earlier moment, status "running". `vast resume` then answers "had already
/// succeeded; nothing to do" (`Outcome::AlreadySucceeded` returns before any snapshot is
/// written), so the snapshot is never refreshed and `vast runs list` shows the succeeded run as
/// "interrupted" (running, no holder: src/cli/commands/runs.rs `list`) forever; only `vast runs
/// show` rewrites it. Found by the kill -9 torture test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_of_a_succeeded_run_refreshes_a_stale_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::new(tmp.path().to_path_buf());
    let def = vast::ops::definition("selftest").unwrap().unwrap();
    let ledger = tmp.path().join("ledger");
    let params =
        serde_json::json!({"items": 2, "ledger": ledger.display().to_string(), "chunks": 1});
    let engine = Engine::new(vast::ops::registry(), Default::default());
    let id = RunId::generate("selftest");
    let store = engine.create_as(&dir, &id, &def, &params).unwrap();
    let snapshot_file = dir.run_dir(id.as_str()).join("snapshot");
    let early = std::fs::read(&snapshot_file).expect("create_as writes a snapshot");
    let cancel = tokio_util::sync::CancellationToken::new;
    assert_eq!(
        engine.execute(store, cancel()).await.unwrap(),
        Outcome::Succeeded
    );
    assert_eq!(
        dir.snapshot(id.as_str()).unwrap().unwrap().status,
        "succeeded"
    );
    // Killed after RunFinished, before the final snapshot: an earlier snapshot is left.
    std::fs::write(&snapshot_file, &early).unwrap();
    assert_eq!(
        dir.snapshot(id.as_str()).unwrap().unwrap().status,
        "running"
    );
    let store = open_run_in(&dir, id.as_str());
    assert_eq!(
        engine.execute(store, cancel()).await.unwrap(),
        Outcome::AlreadySucceeded
    );
    // What the user sees.
    let out = std::process::Command::new(super::cluster_support::VAST)
        .args(["runs", "list", "--json"])
        .env("VAST_STATE_DIR", tmp.path())
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(rows[0]["status"], "succeeded", "vast runs list: {rows}");
    let v = dir.snapshot(id.as_str()).unwrap().unwrap();
    assert_eq!(v.status, "succeeded", "{v:?}");
}

/// run-cleanup of one run, crashed after every journal record and resumed: the run's Jobs,
/// pods and Workloads are gone, the other run's stay, and the queue is never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_cleanup_resumes_after_a_crash_at_every_journal_record() {
    let t0 = Instant::now();
    let two_runs = || async {
        let (c, gone) = cluster_with_a_run().await;
        let (kept, out) = c
            .execute("run", &c.run_params(1, false), Default::default())
            .await;
        assert_eq!(out, Outcome::Succeeded);
        (c, gone, kept)
    };
    let params = |id: &str| serde_json::json!({"context": null, "namespace": NS, "run_id": id});
    let (base, gone, kept) = two_runs().await;
    let (bid, out) = base
        .execute("run-cleanup", &params(&gone), Default::default())
        .await;
    assert_eq!(out, Outcome::Succeeded);
    let records = journal_len(&base, &bid);
    let w = base.world().await;
    assert!(
        !w.jobs.contains_key(&gone) && w.jobs[&kept].len() == 5,
        "{w:?}"
    );
    drop(base);
    for n in 1..records - 1 {
        let (c, gone, kept) = two_runs().await;
        let (id, out) = c
            .execute("run-cleanup", &params(&gone), opts_crash_after(n))
            .await;
        assert!(is_injected_crash(&out), "n={n}: {out:?}");
        assert_eq!(c.world().await.stop_policy, None, "n={n}: queue stopped");
        assert_eq!(resume(&c, &id).await, Outcome::Succeeded, "n={n}");
        let w = c.world().await;
        assert!(!w.jobs.contains_key(&gone), "n={n}: {w:?}");
        assert_eq!(w.jobs[&kept].len(), 5, "n={n}: {w:?}");
        assert_eq!(w.stop_policy, None, "n={n}");
        // No Workload of the removed run's Jobs is left.
        let gone_jobs = expected_jobs(&c, &gone, 1);
        let wls = vast::cluster::kueue::workloads(&c.client(), Some(NS))
            .list(&ListParams::default())
            .await
            .unwrap();
        let left: Vec<_> = wls
            .items
            .iter()
            .filter(|w| {
                w.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| gone_jobs.contains(&o.name))
            })
            .filter_map(|w| w.metadata.name.clone())
            .collect();
        assert!(left.is_empty(), "n={n}: {left:?}");
    }
    eprintln!(
        "run-cleanup: {records} journal records, {} crash points, {:.1} s",
        records - 2,
        t0.elapsed().as_secs_f64()
    );
}
