//! clap derive types only: no behaviour here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "vast",
    version = crate::cli::VERSION,
    disable_version_flag = true,
    about = "Run robotics simulation campaigns on Kubernetes, resumably"
)]
pub struct Cli {
    /// Print version (long only: `-V` is `--vast-file`).
    #[arg(long, action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less output: `-q` prints only errors and the final result, `-qq` only errors.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,
    /// Format of stderr: text, or JSON log events only (results stay on stdout).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Colour in log lines: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    /// Where run state is kept (default: `.vast-state` next to the project file).
    #[arg(long, env = "VAST_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// Use this `.vast` file instead of the project's.
    #[arg(short = 'V', long, global = true)]
    pub vast_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Initialise a project in the current directory (writes `.robovast_project`).
    Init(InitArgs),
    /// Inspect and generate scenario configurations.
    #[command(visible_alias = "config", subcommand)]
    Configuration(ConfigurationCommand),
    /// Execute scenarios.
    #[command(subcommand)]
    Execution(ExecutionCommand),
    /// Continue an interrupted, failed or paused run where it stopped.
    Resume(ResumeArgs),
    /// Inspect persisted runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Run the engine's self-test workflow (used by tests and the benchmark).
    #[command(hide = true)]
    Selftest(SelftestArgs),
    /// Check what vast needs (kubeconfig, context, API, helm, Kueue, setup, robovast pod, S3,
    /// state directory): ok / warn / fail with a fix for each; exit 1 when anything fails.
    Doctor(DoctorArgs),
    /// Print a shell completion script (e.g. `vast completion bash > /etc/bash_completion.d/vast`).
    Completion(CompletionArgs),
    /// Print the man page, or write one page per command into a directory (`--out DIR`).
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The kubeconfig context to check (default: the current one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// One JSON array of checks instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `vast.1` and one page per subcommand (`vast-execution-cluster-run.1`, ...) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Number of map items.
    #[arg(long, default_value_t = 100)]
    pub items: u64,
    /// Append one line per effect to this file.
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Work (sleep) per item, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub item_delay_ms: u64,
    /// Chunks per item, each checkpointed with a cursor.
    #[arg(long, default_value_t = 0)]
    pub chunks: u64,
    /// This item fails permanently on its first attempt.
    #[arg(long)]
    pub fail_item: Option<u64>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The `.vast` configuration file of the project.
    pub config: PathBuf,
    /// Where downloaded results go.
    #[arg(short = 'r', long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Log level stored in the project file.
    #[arg(long, default_value = "INFO")]
    pub project_log_level: String,
    /// Overwrite an existing project file and skip the checks.
    #[arg(short, long)]
    pub force: bool,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigurationCommand {
    /// Print every generated configuration as a YAML document.
    List {
        /// Also show internal keys (starting with `_`).
        #[arg(long)]
        debug: bool,
        /// One JSON array of the configurations instead of YAML documents.
        #[arg(long)]
        json: bool,
    },
    /// Write `OUTPUT_DIR/out_template/` with every configuration (local mode).
    Generate {
        output_dir: PathBuf,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// Execute scenarios on a Kubernetes cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Write every manifest and script of a run to OUTPUT without touching a cluster.
    PrepareRun(PrepareRunArgs),
    /// Upload `DIR/out_template/` of a prepared run to the run's bucket in the cluster's S3
    /// (what `DIR/upload_configs.py` does, without kubectl or python).
    UploadConfigs(UploadConfigsArgs),
    /// Set up the cluster: Kueue, queues, S3 credentials, the robovast pod; saves the setup.
    Setup(SetupArgs),
    /// Tear down everything setup created (runs, queues, robovast objects, saved setup).
    Cleanup(CleanupArgs),
    /// Run the project's scenarios as Kubernetes Jobs (queued by Kueue).
    Run(RunArgs),
    /// Re-submit the runs of a run that have no verdict (lost) or failed, into the same run.
    Rerun(RerunArgs),
    /// Wait for a run to end; the exit code says how (0 all succeeded, 1 some failed or
    /// lost, 3 timed out, 4 stalled, 2 usage or unknown run).
    Wait(WaitArgs),
    /// Show the progress of scenario runs.
    Monitor(MonitorArgs),
    /// Delete the Jobs, pods and Kueue workloads of one run or of all runs.
    RunCleanup(RunCleanupArgs),
    /// Download the results of finished runs (resumable, verified, safely extracted).
    Download(DownloadArgs),
    /// Remove the S3 buckets of runs (refuses runs with running or pending Jobs).
    DownloadCleanup(DownloadCleanupArgs),
    /// Upload the results of finished runs from the cluster to a share (Nextcloud, Google
    /// Drive, or a provider plugin), configured in `.env`.
    UploadToShare(UploadToShareArgs),
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Where results go (default: the project's results directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Download runs again whose local directory exists, and rebuild their remote archives.
    #[arg(short, long)]
    pub force: bool,
    /// Keep the remote archive and the S3 bucket after a successful download.
    #[arg(long)]
    pub skip_removal: bool,
    /// Only forward the pod's HTTP port and list the downloadable archives.
    #[arg(long)]
    pub port_forward_only: bool,
    /// Only build the archives in the pod.
    #[arg(long)]
    pub remote_compress_only: bool,
    /// Delete the local `.tar.gz` after extraction.
    #[arg(long)]
    pub no_keep_archive: bool,
    /// Download the bucket's objects directly through the S3 port-forward (no archive).
    #[arg(long)]
    pub direct: bool,
    /// Only this run.
    #[arg(short = 'i', long)]
    pub run_id: Option<String>,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DownloadCleanupArgs {
    /// Only this bucket (exact name).
    #[arg(short = 'i', long)]
    pub run_id: Option<String>,
    /// Also remove buckets of runs whose Jobs are still running or pending.
    #[arg(short, long)]
    pub force: bool,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UploadToShareArgs {
    /// Rebuild the remote archives.
    #[arg(short, long)]
    pub force: bool,
    /// Keep the archive in the pod after a successful upload.
    #[arg(long)]
    pub keep_archive: bool,
    /// Keep the S3 bucket after a successful upload.
    #[arg(long)]
    pub skip_removal: bool,
    /// Only this run.
    #[arg(short = 'i', long)]
    pub run_id: Option<String>,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The cluster config (`--list` shows them).
    pub cluster_config: Option<String>,
    /// List the available cluster configs.
    #[arg(long)]
    pub list: bool,
    /// Namespace of the robovast pod, the LocalQueue and the Jobs.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Cluster option `key=value` (repeatable).
    #[arg(short = 'o', long = "option")]
    pub options: Vec<String>,
    /// Set up again even if a setup is saved; re-creates the robovast pod.
    #[arg(short, long)]
    pub force: bool,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Cluster config (default: the saved setup's).
    #[arg(short = 'c', long)]
    pub cluster_config: Option<String>,
    /// Namespace (default: the saved setup's, else `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Cluster option `key=value` (repeatable).
    #[arg(short = 'o', long = "option")]
    pub options: Vec<String>,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Do not ask before removing results that were never downloaded (on a terminal, cleanup
    /// asks; without one it proceeds and lists them).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Only this configuration.
    #[arg(short, long)]
    pub config: Option<String>,
    /// Runs per configuration (overrides the `.vast` file; at least 1).
    #[arg(short, long)]
    pub runs: Option<i64>,
    /// Wait until every Job finished, then print statistics.
    #[arg(short, long)]
    pub follow: bool,
    /// Delete the Jobs and pods of all earlier runs first.
    #[arg(long)]
    pub cleanup: bool,
    /// Pass `-t` (log the behaviour tree) to the scenario runner.
    #[arg(short = 't', long)]
    pub log_tree: bool,
    /// With --follow: download the results when every run has a verdict, then remove the
    /// remote copy (one resumable campaign).
    #[arg(long, requires = "follow", conflicts_with = "upload_to_share")]
    pub download: bool,
    /// With --download: where results go (default: the project's results directory).
    #[arg(short, long, requires = "download")]
    pub output: Option<PathBuf>,
    /// With --follow: upload the results to the share configured in `.env` (checked before
    /// any Job is created), then remove the remote copy.
    #[arg(long, requires = "follow")]
    pub upload_to_share: bool,
    /// POST a JSON event to this webhook (ntfy or generic) when the campaign ends, fails or
    /// stalls [env: VAST_NOTIFY_URL]. Never stored: set VAST_NOTIFY_URL for `vast resume`.
    #[arg(long, value_name = "URL")]
    pub notify: Option<String>,
    /// With a notification URL: a heartbeat event at this interval (e.g. `1h`; default off).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub notify_every: Option<std::time::Duration>,
    /// With --follow and a notification URL: a `stalled` event when no Job started or finished
    /// for this long (default 30m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub stall_timeout: Option<std::time::Duration>,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RerunArgs {
    /// The run whose runs are re-submitted (into the same run and bucket).
    pub run_id: String,
    /// Re-submit the runs lost by the infrastructure (the default).
    #[arg(long)]
    pub lost: bool,
    /// Re-submit the runs whose scenario failed.
    #[arg(long)]
    pub failed: bool,
    /// Kubernetes context (default: the run's).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The run to wait for (default: the newest run).
    #[arg(short = 'i', long)]
    pub run_id: Option<String>,
    /// Give up after this long (exit 3), e.g. `2h`, `90m`.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Exit 4 when no Job started or finished for this long (e.g. nothing admitted by Kueue;
    /// default 24h, so a wait without --timeout still ends).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub stall_timeout: Option<std::time::Duration>,
    /// Print the final counts as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Kubernetes context (default: the run's).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Seconds between polls.
    #[arg(short, long, default_value_t = 2.0)]
    pub interval: f64,
    /// Print the state once and exit.
    #[arg(long)]
    pub once: bool,
    /// Machine-readable output (one JSON document per poll; with --once a single one).
    #[arg(long)]
    pub json: bool,
    /// Kubernetes context (default: the contexts of the `.vast` file, else the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunCleanupArgs {
    /// Only this run (default: every run).
    #[arg(short = 'i', long)]
    pub run_id: Option<String>,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UploadConfigsArgs {
    /// The output directory of `prepare-run`.
    pub dir: PathBuf,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PrepareRunArgs {
    pub output: PathBuf,
    /// Only this configuration.
    #[arg(short, long)]
    pub config: Option<String>,
    /// Runs per configuration (overrides the `.vast` file).
    #[arg(short, long)]
    pub runs: Option<u32>,
    /// Cluster config (overrides the saved setup).
    #[arg(short = 'k', long)]
    pub cluster_config: Option<String>,
    /// Cluster option `key=value` (repeatable); `namespace=` also sets the Jobs' namespace.
    #[arg(short = 'o', long = "option")]
    pub options: Vec<String>,
    /// Pass `-t` (log the behaviour tree) to the scenario runner.
    #[arg(short = 't', long)]
    pub log_tree: bool,
    /// Kubernetes context (default: the active one).
    #[arg(short = 'x', long)]
    pub context: Option<String>,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue (see `vast runs list`).
    pub run_id: String,
    /// Continue a run whose journal lost records from what survived (vast refuses otherwise,
    /// since steps whose records were lost may be repeated); check the cluster first.
    #[arg(long)]
    pub force: bool,
    /// Print the result as one JSON document on stdout (status lines off; errors stay on
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a run: status, each step with attempts, errors, next retry, progress.
    Show {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// The run's event journal.
    Events {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// The step graph of a run or of an operation's workflow.
    Graph {
        /// A run id or an operation name.
        target: String,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        #[arg(long)]
        json: bool,
    },
    /// Remove finished runs from the state directory (journal, snapshot and work directory).
    /// A run being executed is never removed; unfinished ones only with --include-unfinished.
    Prune {
        /// Only runs whose last activity is older than this (e.g. 7d, 12h).
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Keep the N newest of the runs that could be removed.
        #[arg(long)]
        keep: Option<usize>,
        /// Also remove interrupted, paused and unreadable runs (never one being executed).
        #[arg(long)]
        include_unfinished: bool,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::engine::retry::duration::parse(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
}
