//! Property tests of the engine on the in-memory store (`engine::MemoryStores`): for random
//! DAGs (plain and map steps, maps that stop or go on when an item fails), random transient
//! and permanent failures, and a crash after
//! every prefix of the journal followed by a resume, the run converges to the outcome, step
//! outputs and effects of an uninterrupted run, and no step whose success was journaled ever
//! runs again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vast::engine::journal::{Event, EventKind, StepStatus};
use vast::engine::view::RunView;
use vast::engine::{
    Definition, Engine, EngineError, EngineOptions, JournalStore, JournalStores, MemoryStores,
    Outcome, Registry, Resources, RunId, Step, StepContext, StepError, StoreFailure,
};

/// One entry of the shared history: a step body's effect, or a success journaled.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Effect(String),
    Journaled(String),
}

type History = Arc<Mutex<Vec<Entry>>>;

/// A step of a generated plan.
#[derive(Debug, Clone)]
struct PlanStep {
    deps: Vec<usize>,
    /// Index (into `deps`) of the ancestor this step maps over.
    map_over: Option<usize>,
    /// Items of the array this step outputs (when not a map).
    items: u64,
    /// Attempts that fail with a transient error before one succeeds.
    transient: u32,
    permanent: bool,
    /// `map.on_item_failure: continue` (a permanent failure then hits the even items only).
    continues: bool,
}

fn plan_strategy() -> impl Strategy<Value = Vec<PlanStep>> {
    (1usize..=5)
        .prop_flat_map(|n| {
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<bool>(), 5),
                    any::<bool>(),
                    0u64..=3,
                    0u32..=2,
                    prop::bool::weighted(0.08),
                    any::<bool>(),
                ),
                n,
            )
        })
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(
                    |(i, (dep_bits, map, items, transient, permanent, continues))| {
                        let deps: Vec<usize> = (0..i).filter(|&d| dep_bits[d]).collect();
                        PlanStep {
                            map_over: (map && !deps.is_empty()).then_some(0),
                            deps,
                            items,
                            transient,
                            permanent,
                            continues,
                        }
                    },
                )
                .collect()
        })
}

fn definition(plan: &[PlanStep]) -> Definition {
    let mut y = String::from("operation: props\nconcurrency: 4\nsteps:\n");
    for (i, s) in plan.iter().enumerate() {
        y.push_str(&format!("  - name: s{i}\n    run: props.step\n"));
        let after: Vec<String> = s.deps.iter().map(|d| format!("s{d}")).collect();
        y.push_str(&format!("    after: [{}]\n", after.join(", ")));
        y.push_str(&format!("    inputs: [{}]\n", after.join(", ")));
        if let Some(m) = s.map_over {
            let on = if s.continues { "continue" } else { "fail" };
            y.push_str(&format!(
                "    map: {{over: s{}, concurrency: 2, on_item_failure: {on}}}\n",
                s.deps[m]
            ));
        }
        y.push_str(
            "    retry: {max_attempts: 8, initial_interval: 1ms, max_interval: 2ms, jitter: 0.0}\n",
        );
    }
    Definition::parse("props.yaml", &y, &|_| true).expect("generated definition is valid")
}

fn params(plan: &[PlanStep]) -> Value {
    let steps: serde_json::Map<String, Value> = plan
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                format!("s{i}"),
                json!({"items": s.items, "transient": s.transient, "permanent": s.permanent,
                       "even_only": s.continues && s.map_over.is_some()}),
            )
        })
        .collect();
    json!({ "steps": steps })
}

/// The generic step: its effect goes into the history, then it fails as planned (by attempt
/// number, so a crash that cost an attempt fails it no more often) or outputs an array.
struct PropStep;

impl Step for PropStep {
    fn run<'a>(&'a self, cx: &'a StepContext) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            let history = cx.resource::<History>()?;
            let steps: BTreeMap<String, Value> = cx.param("steps")?.unwrap_or_default();
            let me = &steps[&cx.key().name];
            let key = cx.key().to_string();
            history
                .lock()
                .expect("history")
                .push(Entry::Effect(key.clone()));
            tokio::task::yield_now().await;
            let hit = me["even_only"].as_bool() != Some(true)
                || cx.index().unwrap_or(0).is_multiple_of(2);
            if me["permanent"].as_bool() == Some(true) && hit {
                return Err(StepError::permanent(format!("{key}: planned failure")));
            }
            if u64::from(cx.attempt()) <= me["transient"].as_u64().unwrap_or(0) {
                return Err(StepError::transient(format!("{key}: planned hiccup")));
            }
            Ok(match cx.index() {
                Some(i) => json!(i * 10),
                None => json!((0..me["items"].as_u64().unwrap_or(0)).collect::<Vec<_>>()),
            })
        })
    }
}

/// The memory store, with every journaled success also written into the history (under the
/// same lock order as the effects, so the history is one linear order of both).
#[derive(Clone)]
struct Recorded {
    inner: MemoryStores,
    history: History,
}

struct RecordedStore {
    inner: vast::engine::store::MemoryStore,
    history: History,
}

impl JournalStores for Recorded {
    type Store = RecordedStore;
    fn create(&self, id: &RunId) -> Result<RecordedStore, StoreFailure> {
        Ok(RecordedStore {
            inner: self.inner.create(id)?,
            history: self.history.clone(),
        })
    }
    fn open(&self, id: &RunId) -> Result<RecordedStore, StoreFailure> {
        Ok(RecordedStore {
            inner: self.inner.open(id)?,
            history: self.history.clone(),
        })
    }
}

impl JournalStore for RecordedStore {
    fn run_id(&self) -> &RunId {
        self.inner.run_id()
    }
    fn append(&mut self, ev: &Event) -> Result<(), StoreFailure> {
        let mut h = self.history.lock().expect("history");
        self.inner.append(ev)?;
        if let EventKind::StepSucceeded { step, .. } = &ev.kind {
            h.push(Entry::Journaled(step.to_string()));
        }
        Ok(())
    }
    fn replay(&self) -> Result<Vec<Event>, StoreFailure> {
        self.inner.replay()
    }
    fn flush(&mut self) -> Result<(), StoreFailure> {
        self.inner.flush()
    }
    fn snapshot(&mut self, view: &RunView) -> Result<(), StoreFailure> {
        self.inner.snapshot(view)
    }
}

fn engine(history: &History, crash_after: Option<u64>) -> Engine {
    let mut registry = Registry::default();
    registry.register("props.step", PropStep);
    let mut resources = Resources::default();
    resources.insert(history.clone());
    let mut e = Engine::new(registry, resources);
    e.options = EngineOptions {
        crash_after,
        ..EngineOptions::default()
    };
    e
}

/// What a finished run shows: its outcome kind and, per succeeded step, its output.
#[derive(Debug, PartialEq)]
struct Result_ {
    outcome: &'static str,
    outputs: BTreeMap<String, String>,
    effects: BTreeSet<String>,
}

fn kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Succeeded | Outcome::AlreadySucceeded => "succeeded",
        Outcome::SucceededWithFailures(_) => "succeeded_with_failures",
        Outcome::Failed(_) => "failed",
        Outcome::Paused(_) => "paused",
        Outcome::Interrupted => "interrupted",
    }
}

fn finished(stores: &Recorded, id: &RunId, outcome: &Outcome) -> Result_ {
    let store = stores.inner.open(id).expect("open");
    let state = Engine::load(&store).expect("replay");
    let mut outputs = BTreeMap::new();
    for (i, node) in state.nodes.iter().enumerate() {
        if node.own.status == StepStatus::Succeeded {
            outputs.insert(
                state.definition.steps[i].name.clone(),
                node.own.output.clone().unwrap_or_default(),
            );
        }
    }
    let effects = effects(&stores.history).into_iter().collect();
    Result_ {
        outcome: kind(outcome),
        outputs,
        effects,
    }
}

/// The keys of every step body that ran, in order.
fn effects(history: &History) -> Vec<String> {
    history
        .lock()
        .expect("history")
        .iter()
        .filter_map(|e| match e {
            Entry::Effect(k) => Some(k.clone()),
            Entry::Journaled(_) => None,
        })
        .collect()
}

/// No effect of a step after its success was journaled.
fn no_repeat_after_success(history: &History) -> Result<(), String> {
    let mut done = BTreeSet::new();
    for e in history.lock().expect("history").iter() {
        match e {
            Entry::Journaled(k) => {
                done.insert(k.clone());
            }
            Entry::Effect(k) if done.contains(k) => {
                return Err(format!("{k} ran again after its success was journaled"))
            }
            Entry::Effect(_) => {}
        }
    }
    Ok(())
}

fn fresh() -> Recorded {
    Recorded {
        inner: MemoryStores::new(),
        history: Arc::new(Mutex::new(Vec::new())),
    }
}

async fn check(plan: Vec<PlanStep>) -> Result<(), TestCaseError> {
    let def = definition(&plan);
    let params = params(&plan);

    // The uninterrupted run.
    let base = fresh();
    let id = RunId::generate("props");
    let e = engine(&base.history, None);
    let store = e.create_as(&base, &id, &def, &params).expect("create");
    let out = e
        .execute(store, CancellationToken::new())
        .await
        .expect("execute");
    let expected = finished(&base, &id, &out);
    no_repeat_after_success(&base.history).map_err(TestCaseError::fail)?;
    let records = base.inner.events(&id).len() as u64;
    // A permanent failure stops scheduling while running steps finish: which other steps ran
    // depends on timing, so failed runs are compared by outcome only.
    let compare_all = expected.outcome != "failed";

    for k in 1..=records + 1 {
        let stores = fresh();
        let id = RunId::generate("props");
        let crashing = engine(&stores.history, Some(k));
        let store = crashing
            .create_as(&stores, &id, &def, &params)
            .expect("create");
        let first = crashing.execute(store, CancellationToken::new()).await;
        let outcome = match first {
            Err(EngineError::InjectedCrash(_)) => {
                let store = stores.open(&id).expect("re-open after the crash");
                engine(&stores.history, None)
                    .execute(store, CancellationToken::new())
                    .await
                    .expect("resume")
            }
            Ok(o) => o,
            Err(other) => return Err(TestCaseError::fail(format!("k={k}: {other}"))),
        };
        no_repeat_after_success(&stores.history)
            .map_err(|m| TestCaseError::fail(format!("crash after {k} records: {m}")))?;
        let got = finished(&stores, &id, &outcome);
        if compare_all {
            prop_assert_eq!(&got, &expected, "crash after {} records", k);
        } else {
            prop_assert_eq!(got.outcome, expected.outcome, "crash after {} records", k);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn resume_after_a_crash_at_every_journal_prefix_converges(plan in plan_strategy()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(check(plan))?;
    }
}

/// The in-memory store refuses a second executor and a run that does not exist, like the
/// real one, so the properties above exercise the same contract.
#[test]
fn memory_store_contract() {
    let stores = MemoryStores::new();
    let id = RunId::generate("props");
    assert!(stores.open(&id).is_err(), "unknown run");
    let held = stores.create(&id).expect("create");
    assert!(stores.create(&id).is_err(), "exists");
    assert!(stores.open(&id).is_err(), "held by an executor");
    drop(held);
    assert!(stores.open(&id).is_ok());
}

/// `on_item_failure: continue`: the failed item is terminal, the others go on, the same item
/// of a later map over the same list is skipped (never run), a whole step after them sees the
/// failure, and the run ends succeeded with failures; a resume of it does nothing more.
#[test]
fn a_failed_item_goes_on_is_skipped_downstream_and_decides_the_outcome() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let plan = vec![
            PlanStep {
                deps: vec![],
                map_over: None,
                items: 3,
                transient: 0,
                permanent: false,
                continues: false,
            },
            PlanStep {
                deps: vec![0],
                map_over: Some(0),
                items: 0,
                transient: 1,
                permanent: true,
                continues: true,
            },
            PlanStep {
                deps: vec![1, 0],
                map_over: Some(1),
                items: 0,
                transient: 0,
                permanent: false,
                continues: false,
            },
            PlanStep {
                deps: vec![2],
                map_over: None,
                items: 1,
                transient: 0,
                permanent: false,
                continues: false,
            },
        ];
        let def = definition(&plan);
        let stores = fresh();
        let id = RunId::generate("props");
        let e = engine(&stores.history, None);
        let store = e
            .create_as(&stores, &id, &def, &params(&plan))
            .expect("create");
        let out = e
            .execute(store, CancellationToken::new())
            .await
            .expect("execute");
        // s1 maps over s0's 3 items; items 0 and 2 fail for good.
        assert_eq!(out, Outcome::SucceededWithFailures(2));
        let store = stores.inner.open(&id).expect("open");
        let state = Engine::load(&store).expect("load");
        let failed = state.failed_items();
        assert_eq!(
            failed
                .iter()
                .map(|f| (f.step.as_str(), f.index))
                .collect::<Vec<_>>(),
            [("s1", 0), ("s1", 2)]
        );
        assert!(failed[0].error.contains("planned failure"), "{failed:?}");
        let effects = effects(&stores.history);
        assert!(effects.contains(&"s2[1]".to_string()), "{effects:?}");
        assert!(
            !effects.iter().any(|k| k == "s2[0]" || k == "s2[2]"),
            "skipped items ran: {effects:?}"
        );
        let s2 = state.definition.index_of("s2").expect("s2");
        let statuses: Vec<StepStatus> = state.nodes[s2]
            .children
            .iter()
            .flatten()
            .map(|c| c.status)
            .collect();
        assert_eq!(
            statuses,
            [
                StepStatus::ItemSkipped,
                StepStatus::Succeeded,
                StepStatus::ItemSkipped
            ]
        );
        assert_eq!(
            state.nodes[s2].own.output.as_deref(),
            Some("[null,10,null]")
        );
        drop(store);
        let again = engine(&stores.history, None)
            .execute(
                stores.inner.open(&id).expect("open"),
                CancellationToken::new(),
            )
            .await
            .expect("resume");
        assert_eq!(again, Outcome::AlreadySucceeded);
    });
}
