//! The inspection view of a run (`vast runs show`, the per-run snapshot and `--json`): plain
//! data derived from a [`RunState`].

use serde::{Deserialize, Serialize};

use super::journal::{render_ms, RunState, StepState, StepStatus};

/// A run as shown to users. Stable JSON: fields are only ever added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub id: String,
    pub operation: String,
    /// running | succeeded | failed | paused | interrupted
    pub status: String,
    pub started_at: String,
    pub updated_at: String,
    pub message: String,
    /// Parameters of the run (JSON text).
    pub params: String,
    /// Journal records so far.
    pub events: u64,
    /// Steps in topological order; map children follow their step, listed unless they
    /// succeeded on their first attempt (the `map` summary counts all of them).
    pub steps: Vec<StepView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// `name`, or `name[i]` for a map child.
    pub key: String,
    pub name: String,
    pub child: Option<u64>,
    pub implementation: String,
    /// pending | running | retry_waiting | succeeded | failed | paused
    pub status: String,
    pub attempts: u32,
    /// Attempts allowed so far (earlier budgets plus the policy's `max_attempts`).
    pub max_attempts: u32,
    pub errors: Vec<ErrorView>,
    pub next_retry_at: Option<String>,
    pub progress: Option<ProgressView>,
    /// The saved cursor (JSON text).
    pub cursor: Option<String>,
    pub map: Option<MapSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorView {
    pub attempt: u32,
    pub at: String,
    /// transient | permanent
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressView {
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MapSummary {
    pub items: u64,
    pub succeeded: u64,
    pub running: u64,
    pub retry_waiting: u64,
    pub pending: u64,
    pub failed: u64,
    pub paused: u64,
}

fn step_view(st: &RunState, i: usize, child: Option<u64>, s: &StepState) -> StepView {
    let def = &st.definition.steps[i];
    StepView {
        key: match child {
            Some(c) => format!("{}[{c}]", def.name),
            None => def.name.clone(),
        },
        name: def.name.clone(),
        child,
        implementation: def.run.clone(),
        status: s.status.as_str().to_string(),
        attempts: s.attempts,
        max_attempts: s.budget_base + def.retry.max_attempts,
        errors: s
            .errors
            .iter()
            .map(|e| ErrorView {
                attempt: e.attempt,
                at: render_ms(e.at_ms),
                kind: e.error.kind.as_str().to_string(),
                message: e.error.message.clone(),
            })
            .collect(),
        next_retry_at: s.next_retry_ms.map(render_ms),
        progress: s.progress.map(|(done, total)| ProgressView { done, total }),
        cursor: s.cursor.clone(),
        map: None,
    }
}

impl RunView {
    pub fn from_state(st: &RunState) -> RunView {
        let mut steps = Vec::new();
        for (i, node) in st.nodes.iter().enumerate() {
            let mut v = step_view(st, i, None, &node.own);
            if let Some(children) = &node.children {
                let mut m = MapSummary {
                    items: children.len() as u64,
                    ..MapSummary::default()
                };
                let mut settled_failed = 0;
                for c in children {
                    match c.status {
                        StepStatus::Succeeded => m.succeeded += 1,
                        StepStatus::Running => m.running += 1,
                        StepStatus::RetryWaiting => m.retry_waiting += 1,
                        StepStatus::Pending => m.pending += 1,
                        StepStatus::Failed => m.failed += 1,
                        StepStatus::Paused => m.paused += 1,
                        // Settled without success: counted as failed (the layout of the
                        // persisted snapshot is kept); the child's own line says which.
                        StepStatus::ItemFailed | StepStatus::ItemSkipped => {
                            m.failed += 1;
                            settled_failed += 1;
                        }
                    }
                }
                if node.own.status != StepStatus::Succeeded {
                    v.status = if m.failed > settled_failed {
                        "failed"
                    } else if m.paused > 0 {
                        "paused"
                    } else {
                        "running"
                    }
                    .to_string();
                }
                v.map = Some(m);
                steps.push(v);
                for (c, s) in children.iter().enumerate() {
                    if !(s.status == StepStatus::Succeeded
                        && s.attempts <= 1
                        && s.errors.is_empty())
                    {
                        steps.push(step_view(st, i, Some(c as u64), s));
                    }
                }
            } else {
                steps.push(v);
            }
        }
        RunView {
            id: st.run_id.clone(),
            operation: st.definition.operation.clone(),
            status: st.status.as_str().to_string(),
            started_at: render_ms(st.created_ms),
            updated_at: render_ms(st.updated_ms),
            message: st.message.clone(),
            params: st.params.clone(),
            events: st.events,
            steps,
        }
    }
}
