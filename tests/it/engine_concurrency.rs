//! The executor's concurrency limits: ready steps run concurrently, never more than the
//! workflow's `concurrency` in total, and never more children of one map step than its
//! `map.concurrency`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vast::engine::{Definition, Engine, Outcome, Registry, Step, StepContext, StepError};
use vast::store::StateDir;

/// Produces `[0, 1, ..., 19]`.
struct List;

impl Step for List {
    fn run<'a>(&'a self, _cx: &'a StepContext) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move { Ok(json!((0..20).collect::<Vec<u32>>())) })
    }
}

/// Counts how many of its attempts run at once (per implementation and in total).
#[derive(Clone)]
struct Gauge {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    all_now: Arc<AtomicUsize>,
    all_max: Arc<AtomicUsize>,
}

impl Step for Gauge {
    fn run<'a>(&'a self, _cx: &'a StepContext) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(n, Ordering::SeqCst);
            let a = self.all_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.all_max.fetch_max(a, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.all_now.fetch_sub(1, Ordering::SeqCst);
            Ok(Value::Null)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn global_and_per_map_limits_are_honoured() {
    let all_now = Arc::new(AtomicUsize::new(0));
    let all_max = Arc::new(AtomicUsize::new(0));
    let gauge = || Gauge {
        now: Arc::new(AtomicUsize::new(0)),
        max: Arc::new(AtomicUsize::new(0)),
        all_now: all_now.clone(),
        all_max: all_max.clone(),
    };
    let (a, b) = (gauge(), gauge());
    let mut reg = Registry::default();
    reg.register("t.list", List);
    reg.register("t.a", a.clone());
    reg.register("t.b", b.clone());
    // Two independent map steps after one list: `a` may run 3 children at once, `b` 4, and
    // the run 5 attempts in total.
    let text = "operation: limits\nconcurrency: 5\nsteps:\n  - {name: list, run: t.list}\n  - {name: a, run: t.a, after: [list], map: {over: list, concurrency: 3}}\n  - {name: b, run: t.b, after: [list], map: {over: list, concurrency: 4}}\n";
    let def = Definition::parse("limits.yaml", text, &|n| reg.contains(n)).expect("valid");
    let e = Engine::new(reg, Default::default());
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = StateDir::new(tmp.path().join("state"));
    let store = e.create(&dir, &def, &json!({})).expect("create");
    let t0 = tokio::time::Instant::now();
    let out = e
        .execute(store, CancellationToken::new())
        .await
        .expect("execute");
    assert_eq!(out, Outcome::Succeeded);
    assert_eq!(a.max.load(Ordering::SeqCst), 3, "map concurrency of a");
    assert!(b.max.load(Ordering::SeqCst) <= 4, "map concurrency of b");
    assert_eq!(all_max.load(Ordering::SeqCst), 5, "the run's concurrency");
    // 40 attempts of 100 ms, 5 at a time: 0.8 s, not 4 s one after another.
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
}
