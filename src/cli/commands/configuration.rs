//! `vast configuration list|generate`.
use crate::cli::{args::ConfigurationCommand, ExitStatus, Globals, UsageError};

pub async fn run(_cmd: ConfigurationCommand, _globals: &Globals) -> anyhow::Result<ExitStatus> {
    Err(UsageError("`vast configuration` is not built yet".into()).into())
}
