//! `vast resume <run-id>`: opens the run (refusing one whose journal lost records unless
//! `--force`), rebuilds its resources from its parameters and executes it
//! ([`crate::cli::execute`]).

use crate::cli::execute::{execute, open_for_execution, store_error};
use crate::cli::{args::ResumeArgs, ExitStatus, Globals, UsageError};
use crate::engine::{Engine, EngineError};
use crate::store::StateDir;

pub async fn run(args: ResumeArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let id = crate::engine::RunId::parse(&args.run_id).map_err(|e| UsageError(e.to_string()))?;
    let dir = StateDir::new(globals.state_dir());
    let store = open_for_execution(&dir, id.as_str())?;
    if let Some(loss) = store.lost.clone().filter(|_| !args.force) {
        // Refused before anything reaches the cluster.
        let e = EngineError::JournalLost {
            run: id.to_string(),
            loss,
        };
        return Err(UsageError(e.to_string()).into());
    }
    let state = store.load().map_err(store_error)?;
    let params: serde_json::Value = serde_json::from_str(&state.params).unwrap_or_default();
    // The clients the run's steps need, rebuilt from its parameters (same context).
    let resources = crate::ops::resources_for(&state.definition.operation, &params)
        .await
        .map_err(|e| UsageError(format!("cannot resume run {id}: {e}")))?;
    let mut engine = Engine::new(crate::ops::registry(), resources);
    engine.options.accept_journal_loss = args.force;
    execute(&engine, &dir, store).await
}
