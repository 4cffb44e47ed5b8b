//! The command line: clap types ([`args`]), one file per command ([`commands`]), executing a
//! run and mapping its outcome to an exit code ([`execute`]), and output rendering
//! ([`output`]). The only place that uses `anyhow` and maps errors to exit codes.

pub mod args;
pub mod commands;
pub mod execute;
pub mod output;

use std::path::PathBuf;

/// `vast --version`: the package version and the git commit it was built from (`build.rs`;
/// `unknown` outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("VAST_GIT_COMMIT"),
    ")"
);

/// What a command reports back to `main`; mapped to the process exit code.
///
/// | variant | code | meaning |
/// |---|---|---|
/// | `Success` | 0 | the operation completed |
/// | `Failure` | 1 | the operation ran but failed (a step failed, a run failed) |
/// | `Usage` | 2 | usage, configuration or input error; nothing was changed |
/// | `Interrupted` | 130 | Ctrl-C / SIGTERM; the run is resumable |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    Failure,
    Usage,
    /// `wait`: the timeout passed first.
    Timeout,
    /// `wait`: no Job started or finished for the stall timeout.
    Stalled,
    Interrupted,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Timeout => 3,
            ExitStatus::Stalled => 4,
            ExitStatus::Interrupted => 130,
        }
    }
}

/// An error that is the user's to fix (bad input, unknown run id, broken `.vast` file):
/// printed as `Error: <message>` and exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Settings shared by every command, resolved once from the global flags.
#[derive(Debug, Clone)]
pub struct Globals {
    /// `--state-dir` / `VAST_STATE_DIR`, if given; otherwise commands derive the default
    /// (`<project dir>/.vast-state`, or `./.vast-state` without a project).
    pub state_dir: Option<PathBuf>,
    /// `--vast-file/-V`: a `.vast` file that overrides the project's.
    pub vast_file: Option<PathBuf>,
    pub verbosity: i8,
}

impl Globals {
    /// The state directory: `--state-dir` / `VAST_STATE_DIR`, else `.vast-state` next to the
    /// nearest `.robovast_project` found walking up from the current directory, else
    /// `./.vast-state`.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let mut dir: Option<&std::path::Path> = Some(&cwd);
        while let Some(d) = dir {
            if d.join(".robovast_project").is_file() {
                return d.join(".vast-state");
            }
            dir = d.parent();
        }
        cwd.join(".vast-state")
    }
}

/// Runs the parsed command line.
pub async fn run(cli: args::Cli) -> anyhow::Result<ExitStatus> {
    let globals = Globals {
        state_dir: cli.global.state_dir.clone(),
        vast_file: cli.global.vast_file.clone(),
        verbosity: cli.global.verbose as i8 - cli.global.quiet as i8,
    };
    commands::dispatch(cli.command, &globals).await
}
