//! Engine harnesses over the selftest workflow (a map step and a side-effect ledger), run
//! in-process: every step run twice converges; every step failed in turn is retried or fails /
//! pauses the run as its policy says; a crash after every journal record then resume reaches
//! the same final state with each effect applied the expected number of times. Plus paused-time
//! retry schedules, timeouts, cursors, corrupt journals and the validation of `workflows/`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vast::engine::journal::{EventKind, RunState, StepKey, StepStatus};
use vast::engine::{
    Definition, Engine, EngineOptions, ErrorKind, Injection, Outcome, Registry, Step, StepContext,
    StepError,
};
use vast::store::StateDir;

fn selftest() -> Definition {
    vast::ops::definition("selftest")
        .expect("embedded")
        .expect("valid")
}

fn engine(options: EngineOptions) -> Engine {
    let mut e = Engine::new(vast::ops::registry(), Default::default());
    e.options = options;
    e
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: StateDir,
    ledger: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = StateDir::new(tmp.path().join("state"));
    let ledger = tmp.path().join("ledger");
    Fixture {
        _tmp: tmp,
        dir,
        ledger,
    }
}

fn params(f: &Fixture, items: u64, chunks: u64) -> Value {
    json!({"items": items, "ledger": f.ledger.display().to_string(), "chunks": chunks})
}

/// Creates and executes a run; returns its id and outcome.
async fn start(
    e: &Engine,
    f: &Fixture,
    def: &Definition,
    p: &Value,
) -> (String, Result<Outcome, vast::engine::EngineError>) {
    let store = e.create(&f.dir, def, p).expect("create");
    let id = store.id().to_string();
    (id, e.execute(store, CancellationToken::new()).await)
}

async fn resume(e: &Engine, f: &Fixture, id: &str) -> Outcome {
    let store = f.dir.open_run(id).expect("open");
    e.execute(store, CancellationToken::new())
        .await
        .expect("resume")
}

fn state(f: &Fixture, id: &str) -> RunState {
    f.dir.open_run(id).expect("open").load().expect("load")
}

fn ledger(f: &Fixture) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(&f.ledger).unwrap_or_default();
    let mut m = BTreeMap::new();
    for l in text.lines() {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

fn outputs(st: &RunState) -> Vec<Option<String>> {
    st.nodes.iter().map(|n| n.own.output.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninterrupted_run_succeeds_and_applies_every_effect_once() {
    let f = fixture();
    let (id, out) = start(
        &engine(Default::default()),
        &f,
        &selftest(),
        &params(&f, 20, 0),
    )
    .await;
    assert_eq!(out.expect("execute"), Outcome::Succeeded);
    let st = state(&f, &id);
    assert!(st
        .nodes
        .iter()
        .all(|n| n.own.status == StepStatus::Succeeded));
    assert_eq!(st.nodes[2].own.output.as_deref(), Some(r#"{"count":20}"#));
    let l = ledger(&f);
    assert_eq!(l.len(), 22, "{l:?}");
    assert!(l.values().all(|&n| n == 1), "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_run_twice_converges() {
    let base = fixture();
    let (bid, out) = start(
        &engine(Default::default()),
        &base,
        &selftest(),
        &params(&base, 15, 2),
    )
    .await;
    assert_eq!(out.expect("baseline"), Outcome::Succeeded);
    let f = fixture();
    let twice = engine(EngineOptions {
        run_twice: true,
        ..Default::default()
    });
    let (id, out) = start(&twice, &f, &selftest(), &params(&f, 15, 2)).await;
    assert_eq!(out.expect("twice"), Outcome::Succeeded);
    assert_eq!(outputs(&state(&f, &id)), outputs(&state(&base, &bid)));
    let (lb, lt) = (ledger(&base), ledger(&f));
    assert_eq!(
        lb.keys().collect::<Vec<_>>(),
        lt.keys().collect::<Vec<_>>(),
        "same effects"
    );
    // Each body ran twice; chunks were skipped the second time thanks to the cursor.
    assert_eq!(lt["item 3"], 2);
    assert_eq!(lt["item 3 chunk 0"], 1);
    assert_eq!(lt["finish 15"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_failed_in_turn_follows_its_policy() {
    let def = selftest();
    for step in ["plan", "item", "finish"] {
        // One transient failure: retried, the run succeeds, the error is kept.
        let f = fixture();
        let e = engine(EngineOptions {
            inject: vec![Injection {
                step: step.into(),
                kind: ErrorKind::Transient,
                times: 1,
            }],
            ..Default::default()
        });
        let (id, out) = start(&e, &f, &def, &params(&f, 6, 0)).await;
        assert_eq!(out.expect("execute"), Outcome::Succeeded, "{step}");
        let st = state(&f, &id);
        let key = if step == "item" {
            StepKey::child(step, 4)
        } else {
            StepKey::step(step)
        };
        let s = st.step(&key).expect("step");
        assert_eq!((s.attempts, s.errors.len()), (2, 1), "{step}");
        assert_eq!(s.errors[0].error.kind, ErrorKind::Transient);

        // A permanent failure: fails fast, descendants never start.
        let f = fixture();
        let e = engine(EngineOptions {
            inject: vec![Injection {
                step: step.into(),
                kind: ErrorKind::Permanent,
                times: 1,
            }],
            ..Default::default()
        });
        let (id, out) = start(&e, &f, &def, &params(&f, 6, 0)).await;
        assert!(
            matches!(out.expect("execute"), Outcome::Failed(ref m) if m.contains("permanent")),
            "{step}"
        );
        let st = state(&f, &id);
        let s = st.step(&key).expect("step");
        assert_eq!((s.status, s.attempts), (StepStatus::Failed, 1), "{step}");
        if step != "finish" {
            assert_eq!(
                st.step(&StepKey::step("finish")).expect("finish").attempts,
                0,
                "{step}"
            );
        }
        // Resume after the cause is gone: the failed step gets a fresh budget and completes.
        assert_eq!(
            resume(&engine(Default::default()), &f, &id).await,
            Outcome::Succeeded,
            "{step}"
        );

        // Transient failures forever: retries run out; `item` pauses, the others fail.
        let f = fixture();
        let e = engine(EngineOptions {
            inject: vec![Injection {
                step: step.into(),
                kind: ErrorKind::Transient,
                times: 100,
            }],
            ..Default::default()
        });
        let (id, out) = start(&e, &f, &def, &params(&f, 6, 0)).await;
        let out = out.expect("execute");
        let st = state(&f, &id);
        // For the map step, the first child to exhaust its retries pauses the run.
        let key = if step == "item" {
            let children = st.nodes[1].children.as_ref().expect("expanded");
            let c = children
                .iter()
                .position(|c| c.status == StepStatus::Paused)
                .expect("a paused child");
            StepKey::child(step, c as u64)
        } else {
            key
        };
        let s = st.step(&key).expect("step");
        assert_eq!(
            (s.attempts, s.errors.len()),
            (3, 3),
            "{step}: max_attempts 3, every error kept"
        );
        if step == "item" {
            assert!(
                matches!(out, Outcome::Paused(ref m) if m.contains("vast resume")),
                "{out:?}"
            );
        } else {
            assert!(
                matches!(out, Outcome::Failed(ref m) if m.contains("after 3 attempts")),
                "{out:?}"
            );
            assert_eq!(s.status, StepStatus::Failed);
        }
        assert_eq!(
            resume(&engine(Default::default()), &f, &id).await,
            Outcome::Succeeded,
            "{step}"
        );
        let st = state(&f, &id);
        let s = st.step(&key).expect("step");
        assert_eq!(
            (s.attempts, s.budget_base, s.errors.len()),
            (4, 3, 3),
            "{step}"
        );
    }
}

/// Crash right after every journal record, then resume: same final state as an uninterrupted
/// run; effects of steps whose success was recorded are never repeated, and no effect runs
/// more often than its step was started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_every_journal_record_then_resume_converges() {
    let def = selftest();
    let base = fixture();
    let (bid, out) = start(
        &engine(Default::default()),
        &base,
        &def,
        &params(&base, 8, 2),
    )
    .await;
    assert_eq!(out.expect("baseline"), Outcome::Succeeded);
    let expected = outputs(&state(&base, &bid));
    let records = state(&base, &bid).events;
    assert!(records > 30, "{records}");
    for k in 1..records - 1 {
        let f = fixture();
        let crashing = engine(EngineOptions {
            crash_after: Some(k),
            ..Default::default()
        });
        let (id, out) = start(&crashing, &f, &def, &params(&f, 8, 2)).await;
        assert!(
            out.is_err(),
            "k={k}: expected the injected crash, got {out:?}"
        );
        let before = f
            .dir
            .open_run(&id)
            .expect("reopen")
            .events()
            .expect("events");
        assert_eq!(
            before.len() as u64,
            k + 1,
            "k={k}: RunCreated + k records: {before:?}"
        );
        let done_before: Vec<StepKey> = before
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::StepSucceeded { step, .. } => Some(step.clone()),
                _ => None,
            })
            .collect();
        let cursors_before: HashMap<StepKey, u64> = before
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::CursorSaved { step, cursor }
                | EventKind::CheckpointSaved { step, cursor, .. } => {
                    Some((step.clone(), cursor.parse().unwrap_or(0)))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            resume(&engine(Default::default()), &f, &id).await,
            Outcome::Succeeded,
            "k={k}"
        );
        let st = state(&f, &id);
        assert_eq!(outputs(&st), expected, "k={k}");
        let all = f
            .dir
            .open_run(&id)
            .expect("reopen")
            .events()
            .expect("events");
        let mut starts: HashMap<StepKey, usize> = HashMap::new();
        for e in &all {
            if let EventKind::StepStarted { step, .. } = &e.kind {
                *starts.entry(step.clone()).or_default() += 1;
            }
        }
        let l = ledger(&f);
        for i in 0..8u64 {
            let key = StepKey::child("item", i);
            let n = l.get(&format!("item {i}")).copied().unwrap_or(0);
            assert!(
                n >= 1 && n <= starts[&key],
                "k={k} item {i}: applied {n}, started {}",
                starts[&key]
            );
            if done_before.contains(&key) {
                assert_eq!(
                    n, 1,
                    "k={k}: item {i} succeeded before the crash and must not re-run"
                );
            }
            for c in 0..2u64 {
                let n = l.get(&format!("item {i} chunk {c}")).copied().unwrap_or(0);
                assert!(n >= 1, "k={k} item {i} chunk {c} missing");
                if c < cursors_before.get(&key).copied().unwrap_or(0) {
                    assert_eq!(
                        n, 1,
                        "k={k}: chunk {c} of item {i} was behind the cursor and re-ran"
                    );
                }
            }
        }
        let fin = l.get("finish 8").copied().unwrap_or(0);
        assert!(
            fin >= 1 && fin <= starts[&StepKey::step("finish")],
            "k={k}: finish applied {fin}"
        );
    }
}

// ---- paused-time retry schedule, Retry-After, timeouts ------------------------------------

struct Flaky {
    calls: Arc<AtomicU32>,
    fail_first: u32,
    retry_after: Option<Duration>,
    sleep: Duration,
}

impl Step for Flaky {
    fn run<'a>(&'a self, _cx: &'a StepContext) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.sleep).await;
            if n <= self.fail_first {
                let e = StepError::transient(format!("call {n} failed"));
                return Err(match self.retry_after {
                    Some(d) => e.retry_after(d),
                    None => e,
                });
            }
            Ok(json!(n))
        })
    }
}

async fn run_flaky(policy: &str, flaky: Flaky) -> (Outcome, Duration, RunState) {
    let f = fixture();
    let mut reg = Registry::default();
    reg.register("t.flaky", flaky);
    let text = format!("operation: flaky\nsteps:\n  - name: a\n    run: t.flaky\n{policy}");
    let def = Definition::parse("flaky.yaml", &text, &|n| reg.contains(n)).expect("valid");
    let e = Engine::new(reg, Default::default());
    let t0 = tokio::time::Instant::now();
    let (id, out) = start(&e, &f, &def, &json!({})).await;
    let took = t0.elapsed();
    (out.expect("execute"), took, state(&f, &id))
}

fn flaky(fail_first: u32, retry_after: Option<Duration>, sleep: Duration) -> Flaky {
    Flaky {
        calls: Arc::new(AtomicU32::new(0)),
        fail_first,
        retry_after,
        sleep,
    }
}

#[tokio::test(start_paused = true)]
async fn retry_delays_follow_the_schedule_in_paused_time() {
    let p = "    retry: {max_attempts: 5, initial_interval: 1s, multiplier: 2, max_interval: 3s, jitter: 0}\n";
    let (out, took, st) = run_flaky(p, flaky(3, None, Duration::ZERO)).await;
    assert_eq!(out, Outcome::Succeeded);
    // 1 s + 2 s + 3 s (capped) between the four attempts.
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_millis(6500),
        "{took:?}"
    );
    assert_eq!(st.nodes[0].own.attempts, 4);
    assert_eq!(st.nodes[0].own.errors.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_stay_within_bounds_in_paused_time() {
    let p = "    retry: {max_attempts: 3, initial_interval: 10s, multiplier: 1, max_interval: 10s, jitter: 0.5}\n";
    let (out, took, _) = run_flaky(p, flaky(2, None, Duration::ZERO)).await;
    assert_eq!(out, Outcome::Succeeded);
    assert!(
        took >= Duration::from_secs(10) && took <= Duration::from_secs(31),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_ends_the_retries() {
    let p = "    retry: {max_attempts: 10, initial_interval: 1s, multiplier: 2, max_interval: 60s, max_elapsed: 2500ms, jitter: 0}\n";
    let (out, _, st) = run_flaky(p, flaky(100, None, Duration::ZERO)).await;
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    // attempt 1 at 0 s, retry after 1 s; attempt 2 at 1 s would need 2 s more: 3 s > 2.5 s.
    assert_eq!(st.nodes[0].own.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_server_is_honoured() {
    let p = "    retry: {max_attempts: 3, initial_interval: 1s, jitter: 0}\n";
    let (out, took, st) =
        run_flaky(p, flaky(1, Some(Duration::from_secs(30)), Duration::ZERO)).await;
    assert_eq!(out, Outcome::Succeeded);
    assert!(took >= Duration::from_secs(30), "{took:?}");
    assert_eq!(st.nodes[0].own.errors[0].error.retry_after_ms, Some(30_000));
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeout_is_a_transient_error() {
    let p = "    timeout: 1s\n    retry: {max_attempts: 2, initial_interval: 1s, jitter: 0}\n";
    let (out, _, st) = run_flaky(p, flaky(0, None, Duration::from_secs(10))).await;
    assert!(
        matches!(out, Outcome::Failed(ref m) if m.contains("timed out")),
        "{out:?}"
    );
    assert_eq!(st.nodes[0].own.errors.len(), 2);
    assert!(st.nodes[0]
        .own
        .errors
        .iter()
        .all(|e| e.error.message.contains("timed out after 1s")));
}

#[tokio::test(start_paused = true)]
async fn cancellation_leaves_steps_started_and_resume_finishes() {
    let f = fixture();
    let e = engine(Default::default());
    let p = json!({"items": 40, "ledger": f.ledger.display().to_string(), "item_delay_ms": 1000});
    let store = e.create(&f.dir, &selftest(), &p).expect("create");
    let id = store.id().to_string();
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        c2.cancel();
    });
    assert_eq!(
        e.execute(store, cancel).await.expect("execute"),
        Outcome::Interrupted
    );
    let st = state(&f, &id);
    assert_eq!(st.status, vast::engine::journal::RunStatus::Interrupted);
    let done = st.nodes[1]
        .children
        .as_ref()
        .expect("expanded")
        .iter()
        .filter(|c| c.status == StepStatus::Succeeded)
        .count();
    assert!(done > 0 && done < 40, "{done}");
    assert_eq!(resume(&e, &f, &id).await, Outcome::Succeeded);
    let l = ledger(&f);
    assert!(
        (0..40).all(|i| l.get(&format!("item {i}")) == Some(&1)),
        "{l:?}"
    );
}

#[tokio::test]
async fn corrupt_journal_record_is_a_clear_error_and_touches_nothing() {
    let f = fixture();
    let (id, out) = start(
        &engine(Default::default()),
        &f,
        &selftest(),
        &params(&f, 3, 0),
    )
    .await;
    assert_eq!(out.expect("execute"), Outcome::Succeeded);
    let len = f.dir.open_run(&id).expect("open").len();
    f.dir
        .open_run(&id)
        .expect("open")
        .corrupt_record(2, b"VST\x09\x01junk")
        .expect("corrupt");
    let store = f.dir.open_run(&id).expect("open");
    let err = engine(Default::default())
        .execute(store, CancellationToken::new())
        .await
        .expect_err("corrupt");
    let msg = format!("{:#}", anyhow::Error::new(err));
    assert!(msg.contains("log #2") && msg.contains("version 9"), "{msg}");
    assert_eq!(
        f.dir.open_run(&id).expect("open").len(),
        len,
        "nothing appended"
    );
}

#[test]
fn every_workflow_file_is_valid_and_embedded() {
    let reg = vast::ops::registry();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("workflows/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        let text = std::fs::read_to_string(&path).expect("read");
        let def = Definition::parse(&format!("workflows/{name}"), &text, &|s| reg.contains(s))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            format!("{}.yaml", def.operation),
            name,
            "file name must be the operation"
        );
        assert!(
            vast::ops::WORKFLOWS
                .iter()
                .any(|(f, t)| *f == name && *t == text),
            "{name} is not embedded (ops::WORKFLOWS)"
        );
        n += 1;
    }
    assert!(n >= 1);
}
