//! `vast execution cluster prepare-run OUTPUT`.
use crate::cli::{args::PrepareRunArgs, ExitStatus, Globals, UsageError};

pub async fn run(_args: PrepareRunArgs, _globals: &Globals) -> anyhow::Result<ExitStatus> {
    Err(UsageError("`prepare-run` is not built yet".into()).into())
}
