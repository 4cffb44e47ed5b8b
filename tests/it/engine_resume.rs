//! What a run keeps across a stop: the retry schedule continues from the persisted attempt
//! count (not a fresh budget), and the progress at a step's cursor is shown after the run
//! stopped (from the journal, not only from the executing process's memory).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vast::engine::journal::{RunState, RunStatus, StepKey, StepStatus};
use vast::engine::view::RunView;
use vast::engine::{Definition, Engine, Outcome, Registry, Step, StepContext, StepError};
use vast::store::StateDir;

fn load(dir: &StateDir, id: &str) -> RunState {
    dir.open_run(id).expect("open").load().expect("load")
}

/// Always fails transiently, counting its calls.
struct AlwaysFails(Arc<AtomicU32>);

impl Step for AlwaysFails {
    fn run<'a>(&'a self, _cx: &'a StepContext) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Err(StepError::transient(format!("call {n} failed")))
        })
    }
}

fn flaky_engine(calls: &Arc<AtomicU32>) -> (Engine, Definition) {
    let mut reg = Registry::default();
    reg.register("t.fails", AlwaysFails(calls.clone()));
    let text = "operation: flaky\nsteps:\n  - name: a\n    run: t.fails\n    retry: {max_attempts: 3, initial_interval: 10s, multiplier: 2, max_interval: 1m, jitter: 0}\n";
    let def = Definition::parse("flaky.yaml", text, &|n| reg.contains(n)).expect("valid");
    (Engine::new(reg, Default::default()), def)
}

#[tokio::test(start_paused = true)]
async fn resume_continues_the_retry_schedule_from_the_persisted_attempt_count() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = StateDir::new(tmp.path().join("state"));
    let calls = Arc::new(AtomicU32::new(0));
    let (e, def) = flaky_engine(&calls);
    let store = e.create(&dir, &def, &json!({})).expect("create");
    let id = store.id().to_string();

    // Attempt 1 fails at once; the retry is due 10 s later. Stop the run at 3 s.
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        c2.cancel();
    });
    assert_eq!(
        e.execute(store, cancel).await.expect("execute"),
        Outcome::Interrupted
    );
    let st = load(&dir, &id);
    assert_eq!(st.status, RunStatus::Interrupted);
    let a = st.step(&StepKey::step("a")).expect("a").clone();
    assert_eq!(
        (a.status, a.attempts, a.errors.len()),
        (StepStatus::RetryWaiting, 1, 1)
    );
    let due = a.next_retry_ms.expect("the next retry time is persisted");
    let view = RunView::from_state(&st);
    assert!(
        view.steps[0].next_retry_at.is_some(),
        "runs show gives the next retry time: {view:?}"
    );
    assert_eq!(view.steps[0].errors.len(), 1);

    // Resume: attempt 2 waits for the persisted retry time (7 s more), attempt 3 comes 20 s
    // after it, and then the budget of 3 attempts is spent: the run fails, no fresh budget.
    let t0 = tokio::time::Instant::now();
    let resumed = vast::engine::journal::now_ms();
    let store = dir.open_run(&id).expect("open");
    let out = e
        .execute(store, CancellationToken::new())
        .await
        .expect("resume");
    let took = t0.elapsed();
    assert!(
        matches!(out, Outcome::Failed(ref m) if m.contains("after 3 attempts")),
        "{out:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3, "3 attempts in total");
    assert!(
        took >= Duration::from_millis((due - resumed) as u64) + Duration::from_secs(20),
        "the resumed schedule waited {took:?}"
    );
    assert!(took < Duration::from_secs(29), "{took:?}");
    let a = load(&dir, &id)
        .step(&StepKey::step("a"))
        .expect("a")
        .clone();
    assert_eq!(
        (a.status, a.attempts, a.budget_base),
        (StepStatus::Failed, 3, 0)
    );
    let attempts: Vec<u32> = a.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "every attempt's error is kept");
}

#[tokio::test(start_paused = true)]
async fn progress_at_the_cursor_is_shown_after_the_run_stopped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = StateDir::new(tmp.path().join("state"));
    let def = vast::ops::definition("selftest")
        .expect("embedded")
        .expect("valid");
    let e = Engine::new(vast::ops::registry(), Default::default());
    // 2 items of 10 chunks, 1 s per chunk; stop after 3.5 s: 3 chunks of each item done.
    let p = json!({"items": 2, "chunks": 10, "item_delay_ms": 1000});
    let store = e.create(&dir, &def, &p).expect("create");
    let id = store.id().to_string();
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        c2.cancel();
    });
    assert_eq!(
        e.execute(store, cancel).await.expect("execute"),
        Outcome::Interrupted
    );
    // A fresh replay of the journal, as `vast runs show` does once the run stopped.
    let view = RunView::from_state(&load(&dir, &id));
    for key in ["item[0]", "item[1]"] {
        let s = view
            .steps
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("{key} listed: {view:?}"));
        let p = s
            .progress
            .as_ref()
            .unwrap_or_else(|| panic!("{key}: progress lost after the stop: {s:?}"));
        assert_eq!(p.total, 10, "{key}");
        assert!(p.done >= 3 && p.done < 10, "{key}: {}", p.done);
        assert_eq!(
            s.cursor.as_deref(),
            Some(p.done.to_string().as_str()),
            "{key}"
        );
    }
}
