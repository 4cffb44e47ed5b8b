//! The journal: the events a run records, the per-step state machine they drive (illegal
//! transitions are rejected), and the run state rebuilt by replaying them.

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::definition::Definition;
use super::error::StepError;

/// Milliseconds since the Unix epoch on the engine's clock: wall time at first use advanced by
/// tokio's monotonic clock (so paused-time tests move it too).
pub fn now_ms() -> i64 {
    static BASE: OnceLock<(i64, tokio::time::Instant)> = OnceLock::new();
    let (wall, mono) = BASE.get_or_init(|| {
        (
            jiff::Timestamp::now().as_millisecond(),
            tokio::time::Instant::now(),
        )
    });
    let since = tokio::time::Instant::now().saturating_duration_since(*mono);
    wall + since.as_millis() as i64
}

/// Renders a journal time as RFC 3339 UTC with exactly three fractional digits, so that the
/// text sorts like the time (`runs list`, `--json` consumers).
pub fn render_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| ms.to_string())
}

/// A step, or one child of a map step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StepKey {
    pub name: String,
    pub child: Option<u64>,
}

impl StepKey {
    pub fn step(name: &str) -> StepKey {
        StepKey {
            name: name.to_string(),
            child: None,
        }
    }
    pub fn child(name: &str, i: u64) -> StepKey {
        StepKey {
            name: name.to_string(),
            child: Some(i),
        }
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.child {
            Some(i) => write!(f, "{}[{i}]", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Paused,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Paused => "paused",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// Status of a step (or map child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    RetryWaiting,
    Succeeded,
    Failed,
    Paused,
    /// A map child that failed (permanent error or retries exhausted) in a map with
    /// `on_item_failure: continue`: terminal; the other items go on, and the same item of
    /// later maps over the same list is skipped.
    ItemFailed,
    /// A map child not run because the same item failed in an earlier map over the same list.
    ItemSkipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::RetryWaiting => "retry_waiting",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Paused => "paused",
            StepStatus::ItemFailed => "item_failed",
            StepStatus::ItemSkipped => "item_skipped",
        }
    }

    /// Whether a map child in this status needs no more work.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::ItemFailed | StepStatus::ItemSkipped
        )
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AfterFailure {
    /// Retry at this time (ms since epoch).
    Retry { at_ms: i64 },
    /// The step (and the run) failed.
    Fail,
    /// The run is paused until `vast resume`.
    Pause,
    /// The map child failed for good; the map goes on (`on_item_failure: continue`).
    /// (Appended last: journals written before it existed still decode.)
    AbandonItem,
}

/// One journal record. JSON payloads are stored as text (bincode cannot encode `Value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: i64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    RunCreated {
        run_id: String,
        operation: String,
        source: String,
        definition: String,
        params: String,
    },
    RunResumed {
        pid: u32,
    },
    MapExpanded {
        step: String,
        items: u64,
    },
    StepStarted {
        step: StepKey,
        attempt: u32,
    },
    StepSucceeded {
        step: StepKey,
        output: String,
    },
    StepFailed {
        step: StepKey,
        attempt: u32,
        error: StepError,
        then: AfterFailure,
    },
    CursorSaved {
        step: StepKey,
        cursor: String,
    },
    /// `vast resume` gives a failed or paused step a fresh retry budget.
    StepRearmed {
        step: StepKey,
    },
    RunFinished {
        status: RunStatus,
        message: String,
    },
    /// A cursor saved together with the progress it stands for (`done` of `total`), so that
    /// `vast runs show` gives the progress after the run stopped. (Appended last: journals
    /// written before it existed still decode; they have `CursorSaved` only.)
    CheckpointSaved {
        step: StepKey,
        cursor: String,
        done: u64,
        total: u64,
    },
    /// A map child not run because item `because` of an earlier map over the same list
    /// failed (appended last, like every new event kind).
    ItemSkipped {
        step: StepKey,
        because: String,
    },
}

impl EventKind {
    /// One-line human description.
    pub fn describe(&self) -> String {
        match self {
            EventKind::RunCreated {
                run_id, operation, ..
            } => format!("run {run_id} of {operation} created"),
            EventKind::RunResumed { pid } => format!("resumed by pid {pid}"),
            EventKind::MapExpanded { step, items } => format!("{step}: fan-out over {items} items"),
            EventKind::StepStarted { step, attempt } => {
                format!("{step}: attempt {attempt} started")
            }
            EventKind::StepSucceeded { step, .. } => format!("{step}: succeeded"),
            EventKind::StepFailed {
                step,
                attempt,
                error,
                then,
            } => {
                let then = match then {
                    AfterFailure::Retry { at_ms } => format!("retry at {}", render_ms(*at_ms)),
                    AfterFailure::Fail => "step failed".into(),
                    AfterFailure::Pause => "run paused".into(),
                    AfterFailure::AbandonItem => "item failed; the others go on".into(),
                };
                format!(
                    "{step}: attempt {attempt} failed ({}): {}; {then}",
                    error.kind.as_str(),
                    error.message
                )
            }
            EventKind::CursorSaved { step, .. } => format!("{step}: cursor saved"),
            EventKind::CheckpointSaved {
                step, done, total, ..
            } => format!("{step}: cursor saved at {done}/{total}"),
            EventKind::StepRearmed { step } => {
                format!("{step}: re-armed with a fresh retry budget")
            }
            EventKind::RunFinished { status, message } => {
                format!("run {}: {message}", status.as_str())
            }
            EventKind::ItemSkipped { step, because } => {
                format!("{step}: skipped ({because} failed)")
            }
        }
    }
}

/// An event that the state machine does not allow in the current state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("illegal journal transition for {key}: {event} while {state}")]
pub struct IllegalTransition {
    pub key: String,
    pub event: String,
    pub state: String,
}

/// One recorded attempt error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub at_ms: i64,
    pub error: StepError,
}

/// The state of one step or map child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// Attempts started in total.
    pub attempts: u32,
    /// Attempts made before the current retry budget (set when re-armed by a resume).
    pub budget_base: u32,
    /// Every attempt's error, oldest first.
    pub errors: Vec<AttemptError>,
    pub next_retry_ms: Option<i64>,
    /// Start of the first attempt of the current budget (for `max_elapsed`).
    pub budget_started_ms: Option<i64>,
    pub output: Option<String>,
    pub cursor: Option<String>,
    /// Progress reported by the step (`done`, `total`): journaled with each cursor (the
    /// progress at the cursor survives the run), in memory between cursors.
    pub progress: Option<(u64, u64)>,
}

impl Default for StepState {
    fn default() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempts: 0,
            budget_base: 0,
            errors: Vec::new(),
            next_retry_ms: None,
            budget_started_ms: None,
            output: None,
            cursor: None,
            progress: None,
        }
    }
}

impl StepState {
    /// Applies a step event, or rejects it without changing anything.
    pub fn apply(
        &mut self,
        key: &StepKey,
        at_ms: i64,
        ev: &EventKind,
    ) -> Result<(), IllegalTransition> {
        use StepStatus::*;
        let illegal = |s: &StepState| IllegalTransition {
            key: key.to_string(),
            event: ev.describe(),
            state: format!("{} after {} attempts", s.status.as_str(), s.attempts),
        };
        match ev {
            EventKind::StepStarted { attempt, .. } => {
                if !matches!(self.status, Pending | Running | RetryWaiting)
                    || *attempt != self.attempts + 1
                {
                    return Err(illegal(self));
                }
                self.status = Running;
                self.attempts = *attempt;
                self.next_retry_ms = None;
                if self.budget_started_ms.is_none() {
                    self.budget_started_ms = Some(at_ms);
                }
            }
            EventKind::StepSucceeded { output, .. } => {
                if self.status != Running {
                    return Err(illegal(self));
                }
                self.status = Succeeded;
                self.output = Some(output.clone());
                self.progress = None;
            }
            EventKind::StepFailed {
                attempt,
                error,
                then,
                ..
            } => {
                if self.status != Running || *attempt != self.attempts {
                    return Err(illegal(self));
                }
                self.errors.push(AttemptError {
                    attempt: *attempt,
                    at_ms,
                    error: error.clone(),
                });
                match then {
                    AfterFailure::Retry { at_ms } => {
                        self.status = RetryWaiting;
                        self.next_retry_ms = Some(*at_ms);
                    }
                    AfterFailure::Fail => self.status = Failed,
                    AfterFailure::Pause => self.status = Paused,
                    AfterFailure::AbandonItem => {
                        if key.child.is_none() {
                            return Err(illegal(self));
                        }
                        self.status = ItemFailed;
                    }
                }
            }
            EventKind::CursorSaved { cursor, .. } => {
                if self.status != Running {
                    return Err(illegal(self));
                }
                self.cursor = Some(cursor.clone());
            }
            EventKind::CheckpointSaved {
                cursor,
                done,
                total,
                ..
            } => {
                if self.status != Running {
                    return Err(illegal(self));
                }
                self.cursor = Some(cursor.clone());
                self.progress = Some((*done, *total));
            }
            EventKind::ItemSkipped { .. } => {
                if self.status != Pending || key.child.is_none() {
                    return Err(illegal(self));
                }
                self.status = ItemSkipped;
            }
            EventKind::StepRearmed { .. } => {
                if !matches!(self.status, Failed | Paused) {
                    return Err(illegal(self));
                }
                self.status = Pending;
                self.budget_base = self.attempts;
                self.budget_started_ms = None;
            }
            _ => return Err(illegal(self)),
        }
        Ok(())
    }
}

/// A step of the definition with its state and, for a map step, its children.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub own: StepState,
    pub children: Option<Vec<StepState>>,
}

/// A map item that failed for good while the others went on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFailure {
    /// The map step.
    pub step: String,
    /// The item's index in the list the map is over.
    pub index: u64,
    /// The last attempt's error.
    pub error: String,
}

/// Everything known about a run, rebuilt from its journal.
#[derive(Debug, Clone)]
pub struct RunState {
    pub run_id: String,
    pub definition: Definition,
    pub params: String,
    pub status: RunStatus,
    pub message: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub nodes: Vec<NodeState>,
    pub events: u64,
}

/// The journal cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the journal is empty or does not start with RunCreated")]
    NoHeader,
    #[error("the stored definition is invalid")]
    Definition(#[from] super::definition::DefinitionError),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
}

impl RunState {
    /// A fresh state from the `RunCreated` event.
    pub fn from_header(ev: &Event) -> Result<RunState, ReplayError> {
        let EventKind::RunCreated {
            run_id,
            source,
            definition,
            params,
            ..
        } = &ev.kind
        else {
            return Err(ReplayError::NoHeader);
        };
        let def = Definition::parse(source, definition, &|_| true)?;
        Ok(RunState {
            run_id: run_id.clone(),
            nodes: vec![NodeState::default(); def.steps.len()],
            definition: def,
            params: params.clone(),
            status: RunStatus::Running,
            message: String::new(),
            created_ms: ev.at_ms,
            updated_ms: ev.at_ms,
            events: 1,
        })
    }

    /// Replays a whole journal.
    pub fn replay(events: &[Event]) -> Result<RunState, ReplayError> {
        let (first, rest) = events.split_first().ok_or(ReplayError::NoHeader)?;
        let mut st = RunState::from_header(first)?;
        for ev in rest {
            st.apply(ev)?;
        }
        Ok(st)
    }

    fn illegal(&self, key: &str, ev: &EventKind, why: &str) -> IllegalTransition {
        IllegalTransition {
            key: key.to_string(),
            event: ev.describe(),
            state: why.to_string(),
        }
    }

    /// Every map item that failed for good (`on_item_failure: continue`), in step order, with
    /// its last error. Items skipped because of them are not listed.
    pub fn failed_items(&self) -> Vec<ItemFailure> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for (c, s) in node.children.iter().flatten().enumerate() {
                if s.status == StepStatus::ItemFailed {
                    out.push(ItemFailure {
                        step: self.definition.steps[i].name.clone(),
                        index: c as u64,
                        error: s
                            .errors
                            .last()
                            .map(|e| e.error.message.clone())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        out
    }

    /// The state of `key`, if it exists.
    pub fn step(&self, key: &StepKey) -> Option<&StepState> {
        let i = self.definition.index_of(&key.name)?;
        match key.child {
            None => Some(&self.nodes[i].own),
            Some(c) => self.nodes[i].children.as_ref()?.get(c as usize),
        }
    }

    pub(crate) fn step_mut(&mut self, key: &StepKey) -> Option<&mut StepState> {
        let i = self.definition.index_of(&key.name)?;
        match key.child {
            None => Some(&mut self.nodes[i].own),
            Some(c) => self.nodes[i].children.as_mut()?.get_mut(c as usize),
        }
    }

    /// Checks `ev` against the state machine and applies it; on error nothing changed.
    pub fn apply(&mut self, ev: &Event) -> Result<(), IllegalTransition> {
        match &ev.kind {
            EventKind::RunCreated { .. } => {
                return Err(self.illegal("run", &ev.kind, "already created"))
            }
            EventKind::RunResumed { .. } => {
                if self.status == RunStatus::Succeeded {
                    return Err(self.illegal("run", &ev.kind, "succeeded"));
                }
                self.status = RunStatus::Running;
                self.message.clear();
            }
            EventKind::RunFinished { status, message } => {
                if self.status != RunStatus::Running || *status == RunStatus::Running {
                    return Err(self.illegal("run", &ev.kind, self.status.as_str()));
                }
                self.status = *status;
                self.message = message.clone();
            }
            EventKind::MapExpanded { step, items } => {
                let i = self
                    .definition
                    .index_of(step)
                    .filter(|&i| self.definition.steps[i].map.is_some())
                    .ok_or_else(|| self.illegal(step, &ev.kind, "not a map step"))?;
                let node = &mut self.nodes[i];
                if node.children.is_some() || node.own.status != StepStatus::Pending {
                    return Err(IllegalTransition {
                        key: step.clone(),
                        event: ev.kind.describe(),
                        state: "already expanded".into(),
                    });
                }
                node.own.status = StepStatus::Running;
                node.children = Some(vec![StepState::default(); *items as usize]);
            }
            EventKind::StepStarted { step, .. }
            | EventKind::StepSucceeded { step, .. }
            | EventKind::StepFailed { step, .. }
            | EventKind::CursorSaved { step, .. }
            | EventKind::CheckpointSaved { step, .. }
            | EventKind::ItemSkipped { step, .. }
            | EventKind::StepRearmed { step } => {
                let is_map_parent = step.child.is_none()
                    && self
                        .definition
                        .index_of(&step.name)
                        .is_some_and(|i| self.definition.steps[i].map.is_some());
                if is_map_parent && !matches!(ev.kind, EventKind::StepSucceeded { .. }) {
                    return Err(self.illegal(
                        &step.to_string(),
                        &ev.kind,
                        "a map step only records success",
                    ));
                }
                if self.status != RunStatus::Running {
                    return Err(self.illegal(
                        &step.to_string(),
                        &ev.kind,
                        &format!("run {}", self.status.as_str()),
                    ));
                }
                let at = ev.at_ms;
                let st = self.step_mut(step).ok_or_else(|| IllegalTransition {
                    key: step.to_string(),
                    event: ev.kind.describe(),
                    state: "unknown step".into(),
                })?;
                let mut next = st.clone();
                next.apply(step, at, &ev.kind)?;
                *st = next;
            }
        }
        self.updated_ms = ev.at_ms;
        self.events += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::ErrorKind;

    fn header() -> Event {
        Event {
            at_ms: 1,
            kind: EventKind::RunCreated {
                run_id: "t-1".into(),
                operation: "t".into(),
                source: "t.yaml".into(),
                definition: "operation: t\nsteps:\n  - {name: a, run: x}\n  - {name: m, run: y, after: [a], map: {over: a}}\n".into(),
                params: "{}".into(),
            },
        }
    }

    fn ev(kind: EventKind) -> Event {
        Event { at_ms: 2, kind }
    }

    fn err() -> StepError {
        StepError {
            kind: ErrorKind::Transient,
            message: "boom".into(),
            retry_after_ms: None,
        }
    }

    #[test]
    fn legal_sequence_replays() {
        let a = StepKey::step("a");
        let events = vec![
            header(),
            ev(EventKind::StepStarted {
                step: a.clone(),
                attempt: 1,
            }),
            ev(EventKind::CursorSaved {
                step: a.clone(),
                cursor: "3".into(),
            }),
            ev(EventKind::StepFailed {
                step: a.clone(),
                attempt: 1,
                error: err(),
                then: AfterFailure::Retry { at_ms: 9 },
            }),
            ev(EventKind::StepStarted {
                step: a.clone(),
                attempt: 2,
            }),
            ev(EventKind::StepFailed {
                step: a.clone(),
                attempt: 2,
                error: err(),
                then: AfterFailure::Pause,
            }),
            ev(EventKind::StepRearmed { step: a.clone() }),
            ev(EventKind::StepStarted {
                step: a.clone(),
                attempt: 3,
            }),
            // crash: Started again without an outcome is legal (re-run from the cursor)
            ev(EventKind::StepStarted {
                step: a.clone(),
                attempt: 4,
            }),
            ev(EventKind::StepSucceeded {
                step: a.clone(),
                output: "[1]".into(),
            }),
            ev(EventKind::MapExpanded {
                step: "m".into(),
                items: 1,
            }),
            ev(EventKind::StepStarted {
                step: StepKey::child("m", 0),
                attempt: 1,
            }),
            ev(EventKind::StepSucceeded {
                step: StepKey::child("m", 0),
                output: "0".into(),
            }),
            ev(EventKind::StepSucceeded {
                step: StepKey::step("m"),
                output: "[0]".into(),
            }),
            ev(EventKind::RunFinished {
                status: RunStatus::Succeeded,
                message: "ok".into(),
            }),
        ];
        let st = RunState::replay(&events).expect("legal");
        let a_state = st.step(&a).expect("a");
        assert_eq!(a_state.attempts, 4);
        assert_eq!(a_state.budget_base, 2);
        assert_eq!(a_state.errors.len(), 2, "every attempt's error is kept");
        assert_eq!(a_state.cursor.as_deref(), Some("3"));
        assert_eq!(st.status, RunStatus::Succeeded);
    }

    #[test]
    fn rendered_times_have_fixed_width_and_sort_like_time() {
        let base = 1_795_000_000_000; // a whole second
        let times = [
            base,
            base + 9,
            base + 90,
            base + 900,
            base + 910,
            base + 1000,
        ];
        let rendered: Vec<String> = times.iter().map(|&t| render_ms(t)).collect();
        assert!(
            rendered
                .iter()
                .all(|r| r.len() == rendered[0].len() && r.ends_with('Z')),
            "{rendered:?}"
        );
        let mut sorted = rendered.clone();
        sorted.sort();
        assert_eq!(sorted, rendered, "string order is time order");
        assert!(rendered[3].ends_with(".900Z"), "{}", rendered[3]);
    }

    #[test]
    fn checkpoint_keeps_cursor_and_progress_until_success() {
        let a = StepKey::step("a");
        let cp = |done: u64| {
            ev(EventKind::CheckpointSaved {
                step: a.clone(),
                cursor: done.to_string(),
                done,
                total: 10,
            })
        };
        let mut st = RunState::from_header(&header()).expect("header");
        assert!(st.apply(&cp(1)).is_err(), "no checkpoint before Started");
        st.apply(&ev(EventKind::StepStarted {
            step: a.clone(),
            attempt: 1,
        }))
        .expect("start");
        st.apply(&cp(4)).expect("checkpoint");
        let s = st.step(&a).expect("a");
        assert_eq!(
            (s.cursor.as_deref(), s.progress),
            (Some("4"), Some((4, 10)))
        );
        st.apply(&ev(EventKind::StepFailed {
            step: a.clone(),
            attempt: 1,
            error: err(),
            then: AfterFailure::Retry { at_ms: 9 },
        }))
        .expect("fail");
        assert_eq!(st.step(&a).expect("a").progress, Some((4, 10)), "kept");
    }

    #[test]
    fn illegal_transitions_are_rejected_without_change() {
        let a = StepKey::step("a");
        let mut st = RunState::from_header(&header()).expect("header");
        let bad = [
            EventKind::StepSucceeded {
                step: a.clone(),
                output: "1".into(),
            },
            EventKind::StepStarted {
                step: a.clone(),
                attempt: 2,
            },
            EventKind::CursorSaved {
                step: a.clone(),
                cursor: "1".into(),
            },
            EventKind::StepRearmed { step: a.clone() },
            EventKind::StepFailed {
                step: a.clone(),
                attempt: 0,
                error: err(),
                then: AfterFailure::Fail,
            },
            EventKind::StepStarted {
                step: StepKey::step("nope"),
                attempt: 1,
            },
            EventKind::StepStarted {
                step: StepKey::step("m"),
                attempt: 1,
            },
            EventKind::MapExpanded {
                step: "a".into(),
                items: 3,
            },
            EventKind::RunCreated {
                run_id: "x".into(),
                operation: "t".into(),
                source: String::new(),
                definition: String::new(),
                params: String::new(),
            },
        ];
        for k in bad {
            let before = st.step(&a).cloned();
            assert!(st.apply(&ev(k.clone())).is_err(), "{k:?} must be rejected");
            assert_eq!(st.step(&a).cloned(), before);
        }
        st.apply(&ev(EventKind::StepStarted {
            step: a.clone(),
            attempt: 1,
        }))
        .expect("start");
        st.apply(&ev(EventKind::StepSucceeded {
            step: a.clone(),
            output: "1".into(),
        }))
        .expect("ok");
        let e = st
            .apply(&ev(EventKind::StepStarted {
                step: a.clone(),
                attempt: 2,
            }))
            .expect_err("after success");
        assert!(e.to_string().contains("succeeded"), "{e}");
        st.apply(&ev(EventKind::RunFinished {
            status: RunStatus::Succeeded,
            message: String::new(),
        }))
        .expect("finish");
        assert!(
            st.apply(&ev(EventKind::RunResumed { pid: 1 })).is_err(),
            "a succeeded run is final"
        );
    }
}
