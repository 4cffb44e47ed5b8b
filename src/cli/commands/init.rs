//! `vast init CONFIG`: writes `.robovast_project` in the current directory.
//!
//! Without `--force` the `.vast` file must parse (upstream also required a Docker daemon; vast
//! runs nothing locally, so it does not).
use crate::cli::{args::InitArgs, ExitStatus, Globals, UsageError};
use crate::project::{Project, VastFile};

pub async fn run(args: InitArgs, _globals: &Globals) -> anyhow::Result<ExitStatus> {
    let cwd = std::env::current_dir()?;
    let config = if args.config.is_absolute() {
        args.config.clone()
    } else {
        cwd.join(&args.config)
    };
    if !args.force {
        VastFile::load(&config).map_err(|e| UsageError(e.to_string()))?;
    }
    let level = args.project_log_level.to_uppercase();
    if !["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level.as_str()) {
        return Err(UsageError(format!(
            "invalid --project-log-level '{}': use DEBUG, INFO, WARNING, ERROR or CRITICAL",
            args.project_log_level
        ))
        .into());
    }
    let file = Project::init(&cwd, &args.config, &args.results_dir, &level, args.force)
        .map_err(|e| UsageError(e.to_string()))?;
    println!("✓ Project initialized: {}", file.display());
    println!("  config:      {}", args.config.display());
    println!("  results dir: {}", args.results_dir.display());
    Ok(ExitStatus::Success)
}
