//! One file per command. Each exposes `async fn run(args, &Globals) -> anyhow::Result<ExitStatus>`.

use super::args::{ClusterCommand, Command, ExecutionCommand};
use super::{ExitStatus, Globals};

pub mod cleanup;
pub mod cluster_common;
pub mod configuration;
pub mod docs;
pub mod doctor;
pub mod download;
pub mod init;
pub mod monitor;
pub mod prepare_run;
pub mod rerun;
pub mod results_common;
pub mod resume;
pub mod run;
pub mod run_cleanup;
pub mod runs;
pub mod selftest;
pub mod setup;
pub mod upload_configs;
pub mod upload_to_share;
pub mod wait;

/// Runs `command`; with its `--json`, stdout carries one JSON document (a command that had
/// nothing else to report prints `{"exit_code": N}`).
pub async fn dispatch(command: Command, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let json = wants_json(&command);
    crate::console::json_result(json);
    let status = run_command(command, globals).await?;
    if json && !crate::console::was_json_printed() {
        super::output::print_json(&serde_json::json!({"exit_code": status.code()}))?;
    }
    Ok(status)
}

/// Whether the command was given `--json` (the commands that print their own JSON documents
/// in every case, `runs`, `monitor`, `wait` and `doctor`, are not counted).
fn wants_json(command: &Command) -> bool {
    use super::args::ConfigurationCommand;
    match command {
        Command::Init(a) => a.json,
        Command::Configuration(ConfigurationCommand::List { json, .. })
        | Command::Configuration(ConfigurationCommand::Generate { json, .. }) => *json,
        Command::Execution(ExecutionCommand::Cluster(c)) => match c {
            ClusterCommand::PrepareRun(a) => a.json,
            ClusterCommand::UploadConfigs(a) => a.json,
            ClusterCommand::Setup(a) => a.json,
            ClusterCommand::Cleanup(a) => a.json,
            ClusterCommand::Run(a) => a.json,
            ClusterCommand::Rerun(a) => a.json,
            ClusterCommand::RunCleanup(a) => a.json,
            ClusterCommand::Download(a) => a.json,
            ClusterCommand::DownloadCleanup(a) => a.json,
            ClusterCommand::UploadToShare(a) => a.json,
            ClusterCommand::Wait(_) | ClusterCommand::Monitor(_) => false,
        },
        Command::Resume(a) => a.json,
        _ => false,
    }
}

async fn run_command(command: Command, globals: &Globals) -> anyhow::Result<ExitStatus> {
    match command {
        Command::Init(args) => init::run(args, globals).await,
        Command::Configuration(cmd) => configuration::run(cmd, globals).await,
        Command::Execution(ExecutionCommand::Cluster(c)) => match c {
            ClusterCommand::PrepareRun(args) => prepare_run::run(args, globals).await,
            ClusterCommand::UploadConfigs(args) => upload_configs::run(args, globals).await,
            ClusterCommand::Setup(args) => setup::run(args, globals).await,
            ClusterCommand::Cleanup(args) => cleanup::run(args, globals).await,
            ClusterCommand::Run(args) => run::run(args, globals).await,
            ClusterCommand::Rerun(args) => rerun::run(args, globals).await,
            ClusterCommand::Wait(args) => wait::run(args, globals).await,
            ClusterCommand::Monitor(args) => monitor::run(args, globals).await,
            ClusterCommand::RunCleanup(args) => run_cleanup::run(args, globals).await,
            ClusterCommand::Download(args) => download::run(args, globals).await,
            ClusterCommand::DownloadCleanup(args) => download::cleanup(args, globals).await,
            ClusterCommand::UploadToShare(args) => upload_to_share::run(args, globals).await,
        },
        Command::Resume(args) => resume::run(args, globals).await,
        Command::Runs(cmd) => runs::run(cmd, globals).await,
        Command::Selftest(args) => selftest::run(args, globals).await,
        Command::Doctor(args) => doctor::run(args, globals).await,
        Command::Completion(args) => docs::completion(args),
        Command::Man(args) => docs::man(args),
    }
}
