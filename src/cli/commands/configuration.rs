//! `vast configuration list|generate`.
use std::path::{Path, PathBuf};

use crate::cli::{args::ConfigurationCommand, ExitStatus, Globals, UsageError};
use crate::project::files::{resolve_vast_file, Project};
use crate::project::template::{write_out_template, Mode};
use crate::project::{generate, Configuration, VastFile};

/// The `.vast` file of this invocation (`--vast-file` or the project's), parsed, with the
/// project when there is one. Every problem is a usage error (exit 2).
pub fn load_vast(globals: &Globals) -> anyhow::Result<(VastFile, Option<Project>)> {
    let cwd = std::env::current_dir()?;
    let project = Project::find(&cwd).ok();
    let path: PathBuf = match (&globals.vast_file, &project) {
        (Some(f), _) => resolve_vast_file(Some(f), &cwd).map_err(|e| UsageError(e.to_string()))?,
        (None, Some(p)) => p.config.clone(),
        // Re-run to get the project error (not initialised / invalid) as the message.
        (None, None) => resolve_vast_file(None, &cwd).map_err(|e| UsageError(e.to_string()))?,
    };
    let vast = VastFile::load(&path).map_err(|e| UsageError(e.to_string()))?;
    Ok((vast, project))
}

/// Every configuration of the file; none is an error.
pub fn load_configs(vast: &VastFile) -> anyhow::Result<Vec<Configuration>> {
    let configs = generate(vast).map_err(|e| UsageError(e.to_string()))?;
    if configs.is_empty() {
        return Err(UsageError("No scenario configs generated.".into()).into());
    }
    crate::project::template::validate_parameters(vast, &configs)
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(configs)
}

/// `--config NAME`: the configuration must exist; otherwise upstream's log lines (the list of
/// configurations) and error. Keeps only that one.
pub fn select_config(configs: &mut Vec<Configuration>, want: Option<&str>) -> anyhow::Result<()> {
    let Some(want) = want else { return Ok(()) };
    if !configs.iter().any(|c| c.name == want) {
        tracing::info!("Config '{want}' not found.");
        tracing::info!("Available configs:");
        for c in configs.iter() {
            tracing::info!("   - {}", c.name);
        }
        return Err(UsageError(format!(
            "Config '{want}' not found (see available configs above)"
        ))
        .into());
    }
    configs.retain(|c| c.name == want);
    Ok(())
}

/// The main and secondary containers' resources resolve for `context` (per-cluster lists):
/// checked once before anything is rendered or sent, since it fails the same way for every Job.
pub fn check_resources(vast: &VastFile, context: Option<&str>) -> anyhow::Result<()> {
    let ex = &vast.execution;
    crate::project::resources::resolve_resources(&ex.resources, context)
        .map_err(|e| UsageError(e.to_string()))?;
    for sc in &ex.secondary_containers {
        crate::project::resources::resolve_resources(&sc.resources, context)
            .map_err(|e| UsageError(e.to_string()))?;
    }
    Ok(())
}

/// One configuration as the YAML document `configuration list` prints.
pub fn config_document(c: &Configuration, debug: bool) -> String {
    let mut m = serde_yaml::Mapping::new();
    m.insert("name".into(), c.name.clone().into());
    m.insert(
        "config".into(),
        serde_yaml::Value::Mapping(c.parameter_map()),
    );
    if debug {
        m.insert("_entry".into(), c.entry.clone().into());
    }
    serde_yaml::to_string(&m).unwrap_or_default()
}

pub async fn run(cmd: ConfigurationCommand, globals: &Globals) -> anyhow::Result<ExitStatus> {
    let (vast, _) = load_vast(globals)?;
    let configs = load_configs(&vast)?;
    match cmd {
        ConfigurationCommand::List { debug, json } => {
            let docs: Vec<String> = configs.iter().map(|c| config_document(c, debug)).collect();
            if json {
                let values = docs
                    .iter()
                    .map(|d| serde_yaml::from_str::<serde_json::Value>(d))
                    .collect::<Result<Vec<_>, _>>()?;
                crate::cli::output::print_json(&values)?;
            } else {
                print!("{}", docs.join("---\n"));
            }
        }
        ConfigurationCommand::Generate { output_dir, json } => {
            let out = output_dir.join("out_template");
            let created = jiff::Timestamp::now().to_string();
            write_out_template(&out, &vast, &configs, Mode::Local, &created)
                .map_err(|e| UsageError(e.to_string()))?;
            crate::cli::output::result(format!(
                "✓ Successfully generated {} in directory '{}'.",
                crate::cli::output::plural(configs.len() as u64, "scenario configuration"),
                display(&output_dir)
            ));
            if json {
                crate::cli::output::print_json(&serde_json::json!({
                    "configurations": configs.len(),
                    "directory": display(&out),
                }))?;
            }
        }
    }
    Ok(ExitStatus::Success)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
