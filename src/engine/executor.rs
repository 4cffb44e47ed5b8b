//! The executor: runs a run's ready steps concurrently (global and per-map limits), journals
//! every transition (Started before the attempt, its outcome after), applies each step's retry
//! policy, timeout and `on_exhausted`, passes outputs to descendants, and stops cooperatively
//! on cancellation. Test hooks (`EngineOptions`) inject failures, repeats and crashes.
//!
//! **Durability of the journal rule.** `StepStarted` is appended before the attempt is spawned,
//! and an append returns only after the record is in the run's frame log (one `write`) and
//! in sled: it survives the process being killed at any point. It is not fsynced per record
//! (sled group-commits every 20 ms, the frame log is synced when the run stops), so an OS crash
//! or power loss can lose the last records: a prefix of the journal survives. That is safe
//! because steps are idempotent: a lost `Started` or `Succeeded` costs a re-run (and an attempt
//! not counted), a lost cursor costs at most one chunk.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::definition::{Definition, OnExhausted, OnItemFailure};
use super::journal::{
    now_ms, AfterFailure, Event, EventKind, IllegalTransition, RunState, RunStatus, StepKey,
    StepStatus,
};
use super::retry::duration;
use super::step::{Checkpoints, ErrorKind, Registry, Resources, Step, StepContext, StepError};
use super::store::{JournalLoss, JournalStore, JournalStores, StoreFailure};
use super::view::RunView;
use super::RunId;

/// How long a step may take to stop after cancellation before it is abandoned (it stays
/// `Started` and re-runs on resume).
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

/// Executor errors (the run stops; it stays resumable).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(StoreFailure),
    #[error("the journal of run {run} cannot be replayed")]
    Replay {
        run: String,
        #[source]
        source: super::journal::ReplayError,
    },
    /// The store lost records: resuming could repeat effects that already happened.
    #[error("run {run}: its journal lost records ({loss}); resuming could repeat steps whose effects already happened, so vast refuses. Check the cluster and the run's results, then `vast resume {run} --force` to continue from what survived")]
    JournalLost { run: String, loss: JournalLoss },
    #[error("injected crash after {0} journal records (test hook crash_after)")]
    InjectedCrash(u64),
    #[error(
        "an earlier journal write of this execution failed ({0}); stopping (the run is resumable)"
    )]
    JournalBroken(String),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("run {run}: step '{step}' uses implementation '{implementation}', which this vast does not have")]
    UnknownImplementation {
        run: String,
        step: String,
        implementation: String,
    },
    #[error("run {run}: parameters are not valid JSON: {detail}")]
    Params { run: String, detail: String },
    #[error("run {run}: map step '{step}': output of '{over}' is not a JSON array")]
    MapInput {
        run: String,
        step: String,
        over: String,
    },
    #[error("run {run}: a step task failed: {detail}")]
    Task { run: String, detail: String },
    #[error("run {run}: the journal lock was poisoned by a panicking step")]
    Poisoned { run: String },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Every step succeeded, but this many map items failed for good
    /// (`on_item_failure: continue`); the CLI exits 1.
    SucceededWithFailures(u64),
    Failed(String),
    Paused(String),
    Interrupted,
    /// The run had already succeeded; nothing was done.
    AlreadySucceeded,
}

/// Test hook: the first `times` attempts of every unit of step `step` fail with `kind`.
#[derive(Debug, Clone)]
pub struct Injection {
    pub step: String,
    pub kind: ErrorKind,
    pub times: u32,
}

/// Test hooks (steno's `inject_error` / `inject_repeat`); all off by default.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub inject: Vec<Injection>,
    /// Run every successful step body a second time (idempotence check).
    pub run_twice: bool,
    /// Simulate a crash right after this many journal records of this execution.
    pub crash_after: Option<u64>,
    /// Resume a run whose store reported lost records ([`JournalLoss`]) from what survived
    /// (`vast resume --force`); otherwise such a run is refused.
    pub accept_journal_loss: bool,
}

/// The journal of an executing run: its store and the state its events produced.
struct Journal {
    store: Box<dyn JournalStore>,
    state: RunState,
    dirty: bool,
    /// Test hook: appends fail once this many records were appended by this execution.
    crash_after: Option<u64>,
    appended: u64,
    /// An append failed (its error): the state holds an event the store may not have, so
    /// nothing more is recorded (or snapshotted) by this execution; a resume replays what is
    /// stored.
    broken: Option<String>,
}

impl Journal {
    /// Checks `kind` against the state machine, writes it, and applies it.
    fn record(&mut self, kind: EventKind) -> Result<(), EngineError> {
        if let Some(n) = self.crash_after.filter(|n| self.appended >= *n) {
            return Err(EngineError::InjectedCrash(n));
        }
        if let Some(why) = &self.broken {
            return Err(EngineError::JournalBroken(why.clone()));
        }
        let ev = Event {
            at_ms: now_ms(),
            kind,
        };
        self.state.apply(&ev)?;
        if let Err(e) = self.store.append(&ev) {
            self.broken = Some(e.to_string());
            return Err(EngineError::Store(e));
        }
        self.appended += 1;
        self.dirty = true;
        Ok(())
    }

    /// Journals `cursor` with the progress the step last reported (if any), so the progress
    /// at the cursor is known after the run stopped.
    pub(crate) fn save_cursor(&mut self, key: &StepKey, cursor: String) -> Result<(), EngineError> {
        let progress = self.state.step(key).and_then(|s| s.progress);
        self.record(match progress {
            Some((done, total)) => EventKind::CheckpointSaved {
                step: key.clone(),
                cursor,
                done,
                total,
            },
            None => EventKind::CursorSaved {
                step: key.clone(),
                cursor,
            },
        })
    }

    pub(crate) fn set_progress(&mut self, key: &StepKey, done: u64, total: u64) {
        if let Some(s) = self.state.step_mut(key) {
            s.progress = Some((done, total));
            self.dirty = true;
        }
    }

    fn snapshot(&mut self) {
        if self.broken.is_some() {
            return;
        }
        if let Err(e) = self.store.snapshot(&RunView::from_state(&self.state)) {
            tracing::warn!("cannot write the run snapshot: {e}");
        }
        self.dirty = false;
    }
}

/// A step's window on the journal: its own cursor and progress ([`Checkpoints`]).
struct JournalSink(Arc<Mutex<Journal>>);

impl JournalSink {
    fn lock(&self) -> Result<MutexGuard<'_, Journal>, StepError> {
        self.0
            .lock()
            .map_err(|_| StepError::permanent("journal lock poisoned"))
    }
}

impl Checkpoints for JournalSink {
    fn cursor(&self, key: &StepKey) -> Result<Option<String>, StepError> {
        Ok(self.lock()?.state.step(key).and_then(|s| s.cursor.clone()))
    }
    fn save_cursor(&self, key: &StepKey, cursor: String) -> Result<(), StepError> {
        self.lock()?
            .save_cursor(key, cursor)
            .map_err(|e| StepError::permanent(format!("cannot save cursor of {key}: {e}")))
    }
    fn progress(&self, key: &StepKey, done: u64, total: u64) {
        if let Ok(mut j) = self.0.lock() {
            j.set_progress(key, done, total);
        }
    }
}

/// Runs workflows: the step registry, the resources handed to steps, and test hooks.
#[derive(Clone, Default)]
pub struct Engine {
    pub registry: Arc<Registry>,
    pub resources: Arc<Resources>,
    pub options: EngineOptions,
}

enum Stop {
    Cancelled,
    Failed(String),
    Paused(String),
}

#[derive(Default)]
struct NodeRt {
    activated: bool,
    queue: VecDeque<Option<u64>>,
    in_flight: usize,
    remaining: u64,
    items: Option<Arc<Value>>,
}

type TaskResult = (usize, Option<u64>, u32, Result<Value, StepError>);

impl Engine {
    pub fn new(registry: Registry, resources: Resources) -> Engine {
        Engine {
            registry: Arc::new(registry),
            resources: Arc::new(resources),
            options: EngineOptions::default(),
        }
    }

    /// Creates a run of `def` with `params` in `stores`; execute it with [`Engine::execute`].
    pub fn create<S: JournalStores>(
        &self,
        stores: &S,
        def: &Definition,
        params: &Value,
    ) -> Result<S::Store, EngineError> {
        self.create_as(stores, &RunId::generate(&def.operation), def, params)
    }

    /// [`Engine::create`] with a given run id (the caller generated it, e.g. to name things
    /// after it before the run starts).
    pub fn create_as<S: JournalStores>(
        &self,
        stores: &S,
        id: &RunId,
        def: &Definition,
        params: &Value,
    ) -> Result<S::Store, EngineError> {
        let mut store = stores.create(id).map_err(EngineError::Store)?;
        let ev = Event {
            at_ms: now_ms(),
            kind: EventKind::RunCreated {
                run_id: id.to_string(),
                operation: def.operation.clone(),
                source: def.source.clone(),
                definition: def.text.clone(),
                params: params.to_string(),
            },
        };
        let state = RunState::from_header(&ev).map_err(|source| EngineError::Replay {
            run: id.to_string(),
            source,
        })?;
        store.append(&ev).map_err(EngineError::Store)?;
        store.flush().map_err(EngineError::Store)?;
        store.mark_created().map_err(EngineError::Store)?;
        let _ = store.snapshot(&RunView::from_state(&state));
        Ok(store)
    }

    /// Replays the journal of an open run.
    pub fn load(store: &dyn JournalStore) -> Result<RunState, EngineError> {
        let events = store.replay().map_err(EngineError::Store)?;
        RunState::replay(&events).map_err(|source| EngineError::Replay {
            run: store.run_id().to_string(),
            source,
        })
    }

    /// Executes (or resumes) the run open in `store` until it succeeds, fails, pauses or
    /// `cancel` fires. A store that lost records is refused unless
    /// [`EngineOptions::accept_journal_loss`].
    pub async fn execute<J: JournalStore>(
        &self,
        store: J,
        cancel: CancellationToken,
    ) -> Result<Outcome, EngineError> {
        let mut store: Box<dyn JournalStore> = Box::new(store);
        let loss = store.loss();
        let accepted_loss = loss.is_some();
        if let Some(loss) = loss {
            if !self.options.accept_journal_loss {
                return Err(EngineError::JournalLost {
                    run: store.run_id().to_string(),
                    loss,
                });
            }
            tracing::warn!(
                "run {}: continuing from what survived of its journal ({loss})",
                store.run_id()
            );
            store.accept_loss().map_err(EngineError::Store)?;
        }
        let state = Self::load(&*store)?;
        if accepted_loss {
            // The old snapshot counted the lost records: replace it now, so the loss is not
            // found again if this execution dies before its first snapshot.
            let _ = store.snapshot(&RunView::from_state(&state));
        }
        let run = state.run_id.clone();
        for s in &state.definition.steps {
            if !self.registry.contains(&s.run) {
                return Err(EngineError::UnknownImplementation {
                    run,
                    step: s.name.clone(),
                    implementation: s.run.clone(),
                });
            }
        }
        if state.status == RunStatus::Succeeded {
            // A kill between the last record and the last snapshot leaves a stale snapshot
            // ("running"); refresh it so `runs list` tells the truth. (Its failed items, if
            // any, are in the journal: `RunState::failed_items`.)
            let _ = store.snapshot(&RunView::from_state(&state));
            return Ok(Outcome::AlreadySucceeded);
        }
        if let Some(prev) = store.took_over_from() {
            tracing::info!("run {run}: took over the lease of {prev} (no longer running)");
        }
        let params: Arc<Value> =
            Arc::new(
                serde_json::from_str(&state.params).map_err(|e| EngineError::Params {
                    run: run.clone(),
                    detail: e.to_string(),
                })?,
            );
        let resumed = state.events > 1;
        let journal = Arc::new(Mutex::new(Journal {
            store,
            state,
            dirty: true,
            crash_after: self.options.crash_after,
            appended: 0,
            broken: None,
        }));
        let mut ex = Exec {
            engine: self,
            run: run.clone(),
            run_id: RunId::parse(&run).map_err(|e| EngineError::Params {
                run: run.clone(),
                detail: e.to_string(),
            })?,
            sink: Arc::new(JournalSink(journal.clone())),
            journal,
            params,
            cancel: cancel.clone(),
            rt: Vec::new(),
            timers: BinaryHeap::new(),
            tasks: JoinSet::new(),
            in_flight: 0,
            stop: None,
            outputs: Vec::new(),
        };
        let def = ex.lock()?.state.definition.clone();
        ex.rt = (0..def.steps.len()).map(|_| NodeRt::default()).collect();
        ex.outputs = vec![None; def.steps.len()];
        if resumed {
            ex.lock()?.record(EventKind::RunResumed {
                pid: std::process::id(),
            })?;
            ex.rearm(&def)?;
        }
        let result = ex.run_loop(&def).await;
        let stop = match result {
            Ok(()) => ex.stop.take(),
            Err(e) => {
                // Stop every in-flight attempt (they stay Started) and release the journal.
                ex.tasks.shutdown().await;
                return Err(e);
            }
        };
        let mut j = ex.lock()?;
        let all_done = j
            .state
            .nodes
            .iter()
            .all(|n| n.own.status == StepStatus::Succeeded);
        let (status, message, outcome) = match stop {
            Some(Stop::Cancelled) => (
                RunStatus::Interrupted,
                format!("interrupted; resume with `vast resume {run}`"),
                Outcome::Interrupted,
            ),
            Some(Stop::Failed(m)) => (RunStatus::Failed, m.clone(), Outcome::Failed(m)),
            Some(Stop::Paused(m)) => (RunStatus::Paused, m.clone(), Outcome::Paused(m)),
            None if all_done => match j.state.failed_items().len() as u64 {
                0 => (
                    RunStatus::Succeeded,
                    "all steps succeeded".into(),
                    Outcome::Succeeded,
                ),
                n => (
                    RunStatus::Succeeded,
                    format!(
                        "all steps succeeded; {n} item{} failed",
                        if n == 1 { "" } else { "s" }
                    ),
                    Outcome::SucceededWithFailures(n),
                ),
            },
            None => {
                let m = "some steps could not run".to_string();
                (RunStatus::Failed, m.clone(), Outcome::Failed(m))
            }
        };
        j.record(EventKind::RunFinished { status, message })?;
        j.store.flush().map_err(EngineError::Store)?;
        j.snapshot();
        Ok(outcome)
    }
}

struct Exec<'e> {
    engine: &'e Engine,
    run: String,
    run_id: RunId,
    journal: Arc<Mutex<Journal>>,
    sink: Arc<JournalSink>,
    params: Arc<Value>,
    cancel: CancellationToken,
    rt: Vec<NodeRt>,
    timers: BinaryHeap<Reverse<(i64, usize, Option<u64>)>>,
    tasks: JoinSet<TaskResult>,
    in_flight: usize,
    stop: Option<Stop>,
    outputs: Vec<Option<Arc<Value>>>,
}

impl Exec<'_> {
    fn lock(&self) -> Result<MutexGuard<'_, Journal>, EngineError> {
        self.journal.lock().map_err(|_| EngineError::Poisoned {
            run: self.run.clone(),
        })
    }

    fn rearm(&mut self, def: &Definition) -> Result<(), EngineError> {
        let mut j = self.lock()?;
        let mut keys = Vec::new();
        for (i, node) in j.state.nodes.iter().enumerate() {
            let name = &def.steps[i].name;
            if matches!(node.own.status, StepStatus::Failed | StepStatus::Paused) {
                keys.push(StepKey::step(name));
            }
            for (c, s) in node.children.iter().flatten().enumerate() {
                if matches!(s.status, StepStatus::Failed | StepStatus::Paused) {
                    keys.push(StepKey::child(name, c as u64));
                }
            }
        }
        for key in keys {
            j.record(EventKind::StepRearmed { step: key })?;
        }
        Ok(())
    }

    fn output_of(&mut self, i: usize) -> Result<Arc<Value>, EngineError> {
        if let Some(v) = &self.outputs[i] {
            return Ok(v.clone());
        }
        let text = self.lock()?.state.nodes[i]
            .own
            .output
            .clone()
            .unwrap_or_else(|| "null".into());
        let v = Arc::new(serde_json::from_str(&text).unwrap_or(Value::Null));
        self.outputs[i] = Some(v.clone());
        Ok(v)
    }

    fn activate(&mut self, def: &Definition) -> Result<(), EngineError> {
        loop {
            let mut changed = false;
            for i in 0..def.steps.len() {
                if self.rt[i].activated {
                    continue;
                }
                let (own, ready) = {
                    let j = self.lock()?;
                    let ready = def.deps[i]
                        .iter()
                        .all(|&d| j.state.nodes[d].own.status == StepStatus::Succeeded);
                    (j.state.nodes[i].own.clone(), ready)
                };
                if own.status == StepStatus::Succeeded {
                    self.rt[i].activated = true;
                    continue;
                }
                if !ready {
                    continue;
                }
                self.rt[i].activated = true;
                changed = true;
                let step = &def.steps[i];
                let Some(map) = &step.map else {
                    match own.status {
                        StepStatus::RetryWaiting => {
                            self.timers
                                .push(Reverse((own.next_retry_ms.unwrap_or(0), i, None)))
                        }
                        _ => self.rt[i].queue.push_back(None),
                    }
                    continue;
                };
                let over = def.index_of(&map.over).unwrap_or(0);
                let items = self.output_of(over)?;
                let n = match &*items {
                    Value::Array(a) => a.len() as u64,
                    _ => {
                        return Err(EngineError::MapInput {
                            run: self.run.clone(),
                            step: step.name.clone(),
                            over: map.over.clone(),
                        })
                    }
                };
                self.rt[i].items = Some(items);
                let mut j = self.lock()?;
                if j.state.nodes[i].children.is_none() {
                    j.record(EventKind::MapExpanded {
                        step: step.name.clone(),
                        items: n,
                    })?;
                }
                // Items that failed in an earlier map over the same list are skipped here.
                let skip = skipped_items(def, &j.state, i);
                for (c, because) in skip {
                    j.record(EventKind::ItemSkipped {
                        step: StepKey::child(&step.name, c),
                        because,
                    })?;
                }
                let mut remaining = 0;
                let mut queue = VecDeque::new();
                let mut timers = Vec::new();
                for (c, s) in j.state.nodes[i].children.iter().flatten().enumerate() {
                    match s.status {
                        s if s.is_settled() => continue,
                        StepStatus::RetryWaiting => {
                            timers.push(Reverse((s.next_retry_ms.unwrap_or(0), i, Some(c as u64))))
                        }
                        _ => queue.push_back(Some(c as u64)),
                    }
                    remaining += 1;
                }
                drop(j);
                self.rt[i].queue = queue;
                self.rt[i].remaining = remaining;
                self.timers.extend(timers);
                if remaining == 0 {
                    self.complete_map(def, i)?;
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }

    /// A child of map step `i` needs no more work; the last one completes the map.
    fn child_settled(&mut self, def: &Definition, i: usize) -> Result<(), EngineError> {
        self.rt[i].remaining -= 1;
        if self.rt[i].remaining == 0 {
            self.complete_map(def, i)?;
        }
        Ok(())
    }

    fn complete_map(&mut self, def: &Definition, i: usize) -> Result<(), EngineError> {
        let mut j = self.lock()?;
        let mut out = String::from("[");
        for (c, s) in j.state.nodes[i].children.iter().flatten().enumerate() {
            if c > 0 {
                out.push(',');
            }
            // A failed or skipped item's output is null (its error is in the journal).
            match s.status {
                StepStatus::Succeeded => out.push_str(s.output.as_deref().unwrap_or("null")),
                _ => out.push_str("null"),
            }
        }
        out.push(']');
        j.record(EventKind::StepSucceeded {
            step: StepKey::step(&def.steps[i].name),
            output: out,
        })
    }

    fn dispatch(&mut self, def: &Definition) -> Result<(), EngineError> {
        for i in 0..def.steps.len() {
            let limit = def.steps[i]
                .map
                .as_ref()
                .map(|m| m.concurrency)
                .unwrap_or(1);
            while self.in_flight < def.concurrency && self.rt[i].in_flight < limit {
                let Some(child) = self.rt[i].queue.pop_front() else {
                    break;
                };
                self.start(def, i, child)?;
            }
        }
        Ok(())
    }

    fn start(&mut self, def: &Definition, i: usize, child: Option<u64>) -> Result<(), EngineError> {
        let sd = &def.steps[i];
        let key = StepKey {
            name: sd.name.clone(),
            child,
        };
        let mut inputs = std::collections::HashMap::new();
        for name in &sd.inputs {
            if let Some(d) = def.index_of(name) {
                inputs.insert(name.clone(), self.output_of(d)?);
            }
        }
        let item = match (child, &self.rt[i].items) {
            (Some(c), Some(items)) => items.get(c as usize).cloned(),
            _ => None,
        };
        let (attempt, failed_items) = {
            let mut j = self.lock()?;
            let attempt = j.state.step(&key).map(|s| s.attempts).unwrap_or(0) + 1;
            // A whole step (e.g. a report) sees the items that failed before it.
            let failed_items = match child {
                None => j.state.failed_items(),
                Some(_) => Vec::new(),
            };
            j.record(EventKind::StepStarted {
                step: key.clone(),
                attempt,
            })?;
            (attempt, failed_items)
        };
        let step: Arc<dyn Step> = self.engine.registry.get(&sd.run).ok_or_else(|| {
            EngineError::UnknownImplementation {
                run: self.run.clone(),
                step: sd.name.clone(),
                implementation: sd.run.clone(),
            }
        })?;
        let cx = StepContext {
            run_id: self.run_id.clone(),
            key,
            attempt,
            params: self.params.clone(),
            inputs,
            item,
            resources: self.engine.resources.clone(),
            cancel: self.cancel.clone(),
            checkpoints: self.sink.clone(),
            failed_items: Arc::new(failed_items),
            budgets: sd.budgets.clone(),
        };
        let injected = self
            .engine
            .options
            .inject
            .iter()
            .find(|inj| inj.step == sd.name && attempt <= inj.times)
            .map(|inj| StepError {
                kind: inj.kind,
                message: format!("injected {} failure", inj.kind.as_str()),
                retry_after_ms: None,
            });
        let timeout = sd.timeout;
        let twice = self.engine.options.run_twice;
        self.rt[i].in_flight += 1;
        self.in_flight += 1;
        self.tasks.spawn(async move {
            let res = match injected {
                Some(e) => Err(e),
                None => {
                    let first = run_attempt(&*step, &cx, timeout).await;
                    if twice && first.is_ok() {
                        run_attempt(&*step, &cx, timeout).await
                    } else {
                        first
                    }
                }
            };
            (i, child, attempt, res)
        });
        Ok(())
    }

    fn finish(&mut self, def: &Definition, r: TaskResult) -> Result<(), EngineError> {
        let (i, child, attempt, res) = r;
        self.rt[i].in_flight -= 1;
        self.in_flight -= 1;
        let sd = &def.steps[i];
        let key = StepKey {
            name: sd.name.clone(),
            child,
        };
        match res {
            Ok(v) => {
                self.lock()?.record(EventKind::StepSucceeded {
                    step: key,
                    output: v.to_string(),
                })?;
                if child.is_some() {
                    self.child_settled(def, i)?;
                }
            }
            Err(e) if e.kind == ErrorKind::Cancelled && self.cancel.is_cancelled() => {
                // Stays Started: re-runs from its cursor on resume.
            }
            Err(mut e) => {
                if e.kind == ErrorKind::Cancelled {
                    e.kind = ErrorKind::Transient;
                }
                let mut j = self.lock()?;
                let st = j.state.step(&key).cloned().unwrap_or_default();
                let now = now_ms();
                let then = if e.kind == ErrorKind::Permanent {
                    AfterFailure::Fail
                } else {
                    let made = attempt.saturating_sub(st.budget_base);
                    let elapsed = Duration::from_millis(
                        (now - st.budget_started_ms.unwrap_or(now)).max(0) as u64,
                    );
                    match sd.retry.next_delay(
                        made,
                        elapsed,
                        e.retry_after_ms.map(Duration::from_millis),
                    ) {
                        Some(d) => AfterFailure::Retry {
                            at_ms: now + d.as_millis() as i64,
                        },
                        None => match sd.on_exhausted {
                            OnExhausted::Fail => AfterFailure::Fail,
                            OnExhausted::Pause => AfterFailure::Pause,
                        },
                    }
                };
                let continues = child.is_some()
                    && sd
                        .map
                        .as_ref()
                        .is_some_and(|m| m.on_item_failure == OnItemFailure::Continue);
                // Only the item's own permanent failure goes on without it; exhausted
                // transient retries (a network outage is the run's trouble, not the item's)
                // stop the run resumably as `on_exhausted` says.
                let then = match then {
                    AfterFailure::Fail if continues && e.kind == ErrorKind::Permanent => {
                        AfterFailure::AbandonItem
                    }
                    other => other,
                };
                j.record(EventKind::StepFailed {
                    step: key.clone(),
                    attempt,
                    error: e.clone(),
                    then: then.clone(),
                })?;
                drop(j);
                match then {
                    AfterFailure::Retry { at_ms } => self.timers.push(Reverse((at_ms, i, child))),
                    AfterFailure::AbandonItem => {
                        tracing::warn!(
                            "run {}: {key} failed after {attempt} attempt{}: {}; the other items go on",
                            self.run,
                            if attempt == 1 { "" } else { "s" },
                            e.message
                        );
                        self.child_settled(def, i)?;
                    }
                    AfterFailure::Fail => {
                        let m = if e.kind == ErrorKind::Permanent {
                            format!("step {key} failed (permanent error): {}", e.message)
                        } else {
                            format!("step {key} failed after {attempt} attempts: {}", e.message)
                        };
                        if !matches!(self.stop, Some(Stop::Failed(_))) {
                            self.stop = Some(Stop::Failed(m));
                        }
                    }
                    AfterFailure::Pause => {
                        if self.stop.is_none() {
                            self.stop = Some(Stop::Paused(format!(
                                "step {key} exhausted its retries ({attempt} attempts): {}; continue with `vast resume {}`",
                                e.message, self.run
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn fire_timers(&mut self) {
        let now = now_ms();
        while let Some(Reverse((at, i, child))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.rt[i].queue.push_back(child);
        }
    }

    async fn run_loop(&mut self, def: &Definition) -> Result<(), EngineError> {
        let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stop.is_none() {
                self.fire_timers();
                self.activate(def)?;
                self.dispatch(def)?;
            }
            if self.in_flight == 0
                && (self.stop.is_some()
                    || (self.timers.is_empty() && self.rt.iter().all(|r| r.queue.is_empty())))
            {
                return Ok(());
            }
            let sleep = self
                .timers
                .peek()
                .filter(|_| self.stop.is_none())
                .map(|Reverse((at, _, _))| Duration::from_millis((at - now_ms()).max(0) as u64));
            tokio::select! {
                biased;
                _ = self.cancel.cancelled(), if self.stop.is_none() => {
                    tracing::info!("run {}: stopping (cancelled); waiting for running steps", self.run);
                    self.stop = Some(Stop::Cancelled);
                }
                Some(r) = self.tasks.join_next(), if self.in_flight > 0 => {
                    let r = r.map_err(|e| EngineError::Task { run: self.run.clone(), detail: e.to_string() })?;
                    self.finish(def, r)?;
                }
                _ = tokio::time::sleep(sleep.unwrap_or_default()), if sleep.is_some() => {}
                _ = tick.tick() => {
                    let mut j = self.lock()?;
                    if j.dirty {
                        j.snapshot();
                    }
                }
            }
        }
    }
}

/// The pending children of map step `i` whose item failed (or was skipped) in an earlier map
/// over the same list, each with that earlier child's key.
fn skipped_items(def: &Definition, state: &RunState, i: usize) -> Vec<(u64, String)> {
    let upstream = same_list_ancestors(def, i);
    if upstream.is_empty() {
        return Vec::new();
    }
    let status = |step: usize, c: usize| {
        state.nodes[step]
            .children
            .as_ref()
            .and_then(|ch| ch.get(c))
            .map(|s| s.status)
    };
    let children = state.nodes[i].children.as_ref().map_or(0, Vec::len);
    (0..children)
        .filter(|&c| status(i, c) == Some(StepStatus::Pending))
        .filter_map(|c| {
            upstream
                .iter()
                .find(|&&a| {
                    matches!(
                        status(a, c),
                        Some(StepStatus::ItemFailed | StepStatus::ItemSkipped)
                    )
                })
                .map(|&a| (c as u64, format!("{}[{c}]", def.steps[a].name)))
        })
        .collect()
}

/// The map steps among `i`'s ancestors that map over the same list as map step `i`.
fn same_list_ancestors(def: &Definition, i: usize) -> Vec<usize> {
    let Some(over) = def.steps[i].map.as_ref().map(|m| &m.over) else {
        return Vec::new();
    };
    let mut seen = vec![false; def.steps.len()];
    let mut stack: Vec<usize> = def.deps[i].clone();
    let mut out = Vec::new();
    while let Some(a) = stack.pop() {
        if std::mem::replace(&mut seen[a], true) {
            continue;
        }
        if def.steps[a].map.as_ref().is_some_and(|m| &m.over == over) {
            out.push(a);
        }
        stack.extend(def.deps[a].iter().copied());
    }
    out.sort_unstable();
    out
}

async fn run_attempt(
    step: &dyn Step,
    cx: &StepContext,
    timeout: Option<Duration>,
) -> Result<Value, StepError> {
    let fut = async {
        match timeout {
            Some(t) => match tokio::time::timeout(t, step.run(cx)).await {
                Ok(r) => r,
                Err(_) => Err(StepError::transient(format!(
                    "attempt timed out after {}",
                    duration::render(t)
                ))),
            },
            None => step.run(cx).await,
        }
    };
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => r,
        _ = cx.cancel.cancelled() => match tokio::time::timeout(CANCEL_GRACE, &mut fut).await {
            Ok(r) => r,
            Err(_) => Err(StepError::cancelled()),
        },
    }
}
