//! `vast runs list|show|events|graph`.
use crate::cli::{args::RunsCommand, ExitStatus, Globals, UsageError};

pub async fn run(_cmd: RunsCommand, _globals: &Globals) -> anyhow::Result<ExitStatus> {
    Err(UsageError("`vast runs` is not built yet".into()).into())
}
