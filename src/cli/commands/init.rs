//! `vast init CONFIG`: writes `.robovast_project` in the current directory, with upstream's
//! output lines.
//!
//! Without `--force` the `.vast` file must parse and an existing project file is kept (upstream
//! overwrote it with a warning; it also required a Docker daemon, which vast does not use).
use crate::cli::output;
use crate::cli::{args::InitArgs, ExitStatus, Globals, UsageError};
use crate::project::{Project, VastFile};

pub async fn run(args: InitArgs, _globals: &Globals) -> anyhow::Result<ExitStatus> {
    let cwd = std::env::current_dir()?;
    let abs = |p: &std::path::Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    let config = abs(&args.config);
    let level = args.project_log_level.to_uppercase();
    if !["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level.as_str()) {
        return Err(UsageError(format!(
            "invalid --project-log-level '{}': use DEBUG, INFO, WARNING, ERROR or CRITICAL",
            args.project_log_level
        ))
        .into());
    }
    if args.force {
        output::status("⚠ Warning: Skipping checks (--force enabled)");
    } else {
        VastFile::load(&config)
            .map_err(|e| UsageError(format!("Failed to load configuration file: {e}")))?;
    }
    let file = Project::init(&cwd, &args.config, &args.results_dir, &level, args.force)
        .map_err(|e| UsageError(e.to_string()))?;
    output::result("✓ Project initialized successfully!");
    output::result(format!("  Configuration: {}", config.display()));
    output::result(format!(
        "  Results directory: {}",
        abs(&args.results_dir).display()
    ));
    output::result(format!("  Project file: {}", file.display()));
    if args.json {
        output::print_json(&serde_json::json!({
            "configuration": config.display().to_string(),
            "results_dir": abs(&args.results_dir).display().to_string(),
            "project_file": file.display().to_string(),
        }))?;
    }
    Ok(ExitStatus::Success)
}
