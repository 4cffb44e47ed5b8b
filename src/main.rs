//! `vast`: parse the command line, set up logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use vast::cli::{self, args::ColorChoice, args::LogFormat, ExitStatus, UsageError};

fn main() -> ExitCode {
    let cli = cli::args::Cli::parse();
    // Test builds: configure failpoints from the FAILPOINTS environment variable.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    vast::console::configure(cli.global.quiet, cli.global.log_format == LogFormat::Json);
    init_tracing(
        cli.global.verbose,
        cli.global.quiet,
        cli.global.log_format,
        cli.global.color,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::output::error(format!("Error: cannot start the async runtime: {e}"));
            return ExitCode::from(ExitStatus::Failure.code());
        }
    };
    let status = match runtime.block_on(cli::run(cli)) {
        Ok(status) => status,
        Err(err) => {
            cli::output::error(format!("Error: {err:#}"));
            if err.downcast_ref::<UsageError>().is_some() {
                ExitStatus::Usage
            } else {
                ExitStatus::Failure
            }
        }
    };
    ExitCode::from(status.code())
}

fn init_tracing(verbose: u8, quiet: u8, format: LogFormat, color: ColorChoice) {
    use tracing_subscriber::EnvFilter;
    // `-v`/`-q` set vast's own level; dependencies (kube, hyper, the AWS SDK) stay at `warn`,
    // so their request traces (which carry access keys in Authorization headers) never reach
    // the log unless asked for explicitly with VAST_LOG.
    let level = match verbose as i16 - quiet as i16 {
        i16::MIN..=-2 => "error",
        -1 => "warn,vast=warn,vast_state=warn",
        0 => "warn,vast=info,vast_state=info",
        1 => "warn,vast=debug,vast_state=debug",
        _ => "warn,vast=trace,vast_state=trace",
    };
    // kube-client logs every failed request at ERROR ("failed with error client error
    // (Connect)") before vast has classified it; vast reports each cause once itself.
    let level = format!("{level},kube_client::client::builder=off");
    let filter = EnvFilter::try_from_env("VAST_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Each record whole, with any progress bar cleared first and redrawn after.
        .with_writer(vast::progress::LogWriter)
        .with_ansi(cli::output::color_enabled(
            color,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ));
    match format {
        LogFormat::Text => builder.without_time().with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
