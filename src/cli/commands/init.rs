//! `vast init CONFIG`.
use crate::cli::{args::InitArgs, ExitStatus, Globals, UsageError};

pub async fn run(_args: InitArgs, _globals: &Globals) -> anyhow::Result<ExitStatus> {
    Err(UsageError("`vast init` is not built yet".into()).into())
}
