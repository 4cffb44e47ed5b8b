//! Executing a run, for every command that does: starting a new run of an embedded workflow
//! ([`start_operation`]), running it with Ctrl-C / SIGTERM handling, and mapping its outcome to
//! an exit status ([`execute`]: a run that succeeded with failed items exits 1); opening a run
//! for execution with the user's mistakes as usage errors; reading a finished run's outputs.

use tokio_util::sync::CancellationToken;

use crate::cli::{output, ExitStatus, Globals, UsageError};
use crate::engine::{Engine, EngineError, Outcome};
use crate::store::{RunStore, StateDir, StoreError};

/// Starts a new run of the embedded workflow `operation` with `params`, handing `resources`
/// (clients, configuration) to its steps, and executes it like `vast resume` does. This is how
/// the operation commands (`setup`, `run`, `download`, ...) run their workflows.
pub async fn start_operation(
    globals: &Globals,
    operation: &str,
    params: &serde_json::Value,
    resources: crate::engine::Resources,
) -> anyhow::Result<ExitStatus> {
    let dir = StateDir::new(globals.state_dir());
    let id = crate::engine::RunId::generate(operation);
    start_operation_as(&dir, &id, operation, params, resources).await
}

/// [`start_operation`] with a chosen run id (the `run` command names its bucket and Jobs
/// after it, so it needs the id before the run starts).
pub async fn start_operation_as(
    dir: &StateDir,
    id: &crate::engine::RunId,
    operation: &str,
    params: &serde_json::Value,
    resources: crate::engine::Resources,
) -> anyhow::Result<ExitStatus> {
    let def = crate::ops::definition(operation)
        .ok_or_else(|| {
            UsageError(format!(
                "no workflow for operation '{operation}' (workflows/)"
            ))
        })?
        .map_err(|e| UsageError(e.to_string()))?;
    let engine = Engine::new(crate::ops::registry(), resources);
    let store = engine.create_as(dir, id, &def, params)?;
    output::note(format!(
        "run {} started (resume with `vast resume {}` if interrupted)",
        store.id(),
        store.id()
    ));
    execute(&engine, dir, store).await
}

/// Opens run `id`, mapping the user's mistakes (unknown run, live lease) to usage errors.
pub fn open_for_execution(dir: &StateDir, id: &str) -> anyhow::Result<RunStore> {
    dir.open_run(id).map_err(|e| match e {
        StoreError::Lease(l) => UsageError(format!(
            "cannot execute run {id}: {l}; wait for it to stop (`vast runs show {id}` works meanwhile)"
        ))
        .into(),
        other => store_error(other),
    })
}

/// Maps store errors that are the user's to fix to [`UsageError`].
pub fn store_error(e: StoreError) -> anyhow::Error {
    match e {
        e @ (StoreError::UnknownRun { .. } | StoreError::Lease(_)) => {
            UsageError(e.to_string()).into()
        }
        other => anyhow::Error::new(other),
    }
}

/// Executes the run with Ctrl-C / SIGTERM handling and maps its outcome to an exit status.
/// A run that succeeded with failed items (map items that failed for good while the others
/// went on, `on_item_failure: continue`: runs of a download or upload) exits 1.
pub async fn execute(
    engine: &Engine,
    dir: &StateDir,
    store: RunStore,
) -> anyhow::Result<ExitStatus> {
    let id = store.id().to_string();
    let status = execute_run(engine, dir, store).await?;
    if crate::console::json_result_on() {
        output::print_json(&run_report(dir, &id, status, serde_json::json!({})))?;
    }
    Ok(status)
}

async fn execute_run(
    engine: &Engine,
    dir: &StateDir,
    store: RunStore,
) -> anyhow::Result<ExitStatus> {
    let id = store.id().to_string();
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch_signals(cancel.clone(), id.clone()));
    let result = engine.execute(store, cancel).await;
    watcher.abort();
    match result {
        Ok(Outcome::Succeeded) => {
            if let Some(m) = campaign_shortfall(dir, &id) {
                output::error(format!("run {id} finished: {m}"));
                return Ok(ExitStatus::Failure);
            }
            output::note(format!("run {id} succeeded"));
            Ok(ExitStatus::Success)
        }
        Ok(Outcome::SucceededWithFailures(failed)) => {
            output::error(format!(
                "run {id} finished; {} failed (see above)",
                output::plural(failed, "item")
            ));
            Ok(ExitStatus::Failure)
        }
        Ok(Outcome::AlreadySucceeded) => {
            let failed = failed_items(dir, &id);
            output::note(format!("run {id} had already succeeded; nothing to do"));
            if failed > 0 {
                output::error(format!(
                    "({} of it failed; start the command again to retry them)",
                    output::plural(failed, "item")
                ));
                return Ok(ExitStatus::Failure);
            }
            if let Some(m) = campaign_shortfall(dir, &id) {
                output::error(format!("({m})"));
                return Ok(ExitStatus::Failure);
            }
            Ok(ExitStatus::Success)
        }
        Ok(Outcome::Failed(m)) => {
            output::error(format!(
                "Error: run {id} failed: {m}\n(after fixing the cause: vast resume {id})"
            ));
            notify_stopped(engine, dir, &id, &m).await;
            Ok(ExitStatus::Failure)
        }
        Ok(Outcome::Paused(m)) => {
            output::error(format!("run {id} paused: {m}"));
            notify_stopped(engine, dir, &id, &m).await;
            Ok(ExitStatus::Failure)
        }
        Ok(Outcome::Interrupted) => {
            output::error(format!(
                "run {id} interrupted; resume with: vast resume {id}"
            ));
            Ok(ExitStatus::Interrupted)
        }
        Err(e @ EngineError::JournalLost { .. }) => Err(UsageError(e.to_string()).into()),
        Err(EngineError::Store(e)) => match e.downcast::<StoreError>() {
            Ok(e) => Err(store_error(*e)),
            Err(e) => Err(anyhow::anyhow!(e)),
        },
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "run {id} stopped; it is resumable with `vast resume {id}`"
        ))),
    }
}

/// A campaign's webhook hears that it stopped with an error.
async fn notify_stopped(engine: &Engine, dir: &StateDir, id: &str, message: &str) {
    let url = engine
        .resources
        .get::<crate::ops::run::Notifier>()
        .and_then(|n| n.0.clone());
    if let Some(url) = url {
        crate::ops::campaign::notify_stopped(&url, dir.root(), id, message).await;
    }
}

/// A campaign (a run with a `notify` step) whose scenario runs did not all succeed, or whose
/// results were not all collected: its message (the campaign exits 1, like `wait`).
fn campaign_shortfall(dir: &StateDir, id: &str) -> Option<String> {
    let out = step_output(dir, id, "notify")?;
    if out.get("outcome").and_then(|o| o.as_str()) == Some("succeeded") {
        return None;
    }
    Some(
        out.get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("some runs failed or were lost")
            .to_string(),
    )
}

/// First Ctrl-C / SIGTERM: cancel cooperatively. Second: exit 130 at once (the journal is
/// consistent at every point, so the run stays resumable).
async fn watch_signals(cancel: CancellationToken, id: String) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will kill vast without cleanup");
        return;
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        seen += 1;
        if seen == 1 {
            output::warn(format!(
                "interrupted: stopping run {id} (press Ctrl-C again to exit at once)"
            ));
            cancel.cancel();
        } else {
            output::error(format!("exiting now; resume with: vast resume {id}"));
            std::process::exit(130);
        }
    }
}

/// The output of run `id`'s step `step` (None when it has none).
pub fn step_output(dir: &StateDir, id: &str, step: &str) -> Option<serde_json::Value> {
    let store = dir.open_run_for_reading(id).ok()?;
    let state = store.load().ok()?;
    let i = state.definition.steps.iter().position(|s| s.name == step)?;
    let text = state.nodes.get(i)?.own.output.clone()?;
    serde_json::from_str(&text).ok()
}

/// The number of map items of run `id` that failed for good (engine data, from its journal).
fn failed_items(dir: &StateDir, id: &str) -> u64 {
    dir.open_run_for_reading(id)
        .and_then(|s| s.load())
        .map(|st| st.failed_items().len() as u64)
        .unwrap_or(0)
}

/// The `--json` document of a command that ran a workflow: the run id, operation, the run's
/// status, the exit code, every step's output (keyed by step name), the bucket and number of
/// Jobs of a `run`, plus `extra` fields.
pub fn run_report(
    dir: &StateDir,
    id: &str,
    status: ExitStatus,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut report = serde_json::json!({
        "run_id": id,
        "exit_code": status.code(),
    });
    if let Some(st) = dir
        .open_run_for_reading(id)
        .ok()
        .and_then(|s| s.load().ok())
    {
        let view = crate::engine::view::RunView::from_state(&st);
        let mut outputs = serde_json::Map::new();
        for (i, step) in st.definition.steps.iter().enumerate() {
            if let Some(text) = st.nodes.get(i).and_then(|n| n.own.output.clone()) {
                let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                outputs.insert(step.name.clone(), v);
            }
        }
        // What a script wants first of a run: its bucket and number of Jobs.
        if let Some(b) = outputs.get("upload").and_then(|u| u.get("bucket")) {
            report["bucket"] = b.clone();
        }
        if let Some(plan) = outputs.get("plan").and_then(|p| p.as_array()) {
            report["jobs"] = plan.len().into();
        }
        report["operation"] = view.operation.into();
        report["status"] = view.status.into();
        report["outputs"] = outputs.into();
    }
    if let (Some(r), serde_json::Value::Object(extra)) = (report.as_object_mut(), extra) {
        r.extend(extra);
    }
    report
}
