//! `vast resume <run-id>`.
use crate::cli::{args::ResumeArgs, ExitStatus, Globals, UsageError};

pub async fn run(_args: ResumeArgs, _globals: &Globals) -> anyhow::Result<ExitStatus> {
    Err(UsageError("`vast resume` is not built yet".into()).into())
}
