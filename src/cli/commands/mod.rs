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

pub async fn dispatch(command: Command, globals: &Globals) -> anyhow::Result<ExitStatus> {
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
