//! `vast selftest` (hidden): creates and executes a run of the `selftest` workflow. Prints
//! `run <id>` on stdout as soon as the run exists.

use std::io::Write;

use serde_json::json;

use crate::cli::{args::SelftestArgs, ExitStatus, Globals, UsageError};
use crate::engine::Engine;
use crate::store::StateDir;

pub async fn run(args: SelftestArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let def = crate::ops::definition("selftest")
        .ok_or_else(|| UsageError("the selftest workflow is not embedded".into()))?
        .map_err(|e| UsageError(e.to_string()))?;
    let params = json!({
        "items": args.items,
        "ledger": args.ledger.map(|p| p.display().to_string()),
        "item_delay_ms": args.item_delay_ms,
        "chunks": args.chunks,
        "fail_item": args.fail_item,
    });
    let dir = StateDir::new(globals.state_dir());
    let engine = Engine::new(crate::ops::registry(), Default::default());
    let store = engine.create(&dir, &def, &params)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "run {}", store.id())?;
        out.flush()?;
    }
    crate::cli::execute::execute(&engine, &dir, store).await
}
