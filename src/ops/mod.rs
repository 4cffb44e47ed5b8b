//! One file per operation: its steps, bound to the names used in `workflows/`, over a base
//! layer ([`base`]: what every step shares; it imports no operation) and the run accounting
//! ([`runs`]: the run record, Job states, removal of a run's objects). This module, the top,
//! holds the step registry (implementation name → step), the embedded workflow definitions and
//! the resources a run's steps get ([`resources_for`]).

pub mod base;
pub mod campaign;
pub mod cleanup;
pub mod download;
pub mod evidence;
pub mod results;
pub mod run;
pub mod runs;
pub mod selftest;
pub mod setup;
pub mod share;

use crate::engine::{Definition, DefinitionError, Registry, Resources};

/// Every workflow definition, embedded in the binary: (file name, YAML text).
pub const WORKFLOWS: &[(&str, &str)] = &[
    (
        "selftest.yaml",
        include_str!("../../workflows/selftest.yaml"),
    ),
    ("setup.yaml", include_str!("../../workflows/setup.yaml")),
    ("cleanup.yaml", include_str!("../../workflows/cleanup.yaml")),
    ("run.yaml", include_str!("../../workflows/run.yaml")),
    (
        "run-cleanup.yaml",
        include_str!("../../workflows/run-cleanup.yaml"),
    ),
    (
        "download.yaml",
        include_str!("../../workflows/download.yaml"),
    ),
    (
        "download-cleanup.yaml",
        include_str!("../../workflows/download-cleanup.yaml"),
    ),
    (
        "remote-compress.yaml",
        include_str!("../../workflows/remote-compress.yaml"),
    ),
    (
        "upload-to-share.yaml",
        include_str!("../../workflows/upload-to-share.yaml"),
    ),
    (
        "campaign.yaml",
        include_str!("../../workflows/campaign.yaml"),
    ),
    (
        "campaign-share.yaml",
        include_str!("../../workflows/campaign-share.yaml"),
    ),
    ("rerun.yaml", include_str!("../../workflows/rerun.yaml")),
];

pub use base::CLUSTER_OPERATIONS;

/// Builds the resources of a run of `operation` from its parameters (so `vast resume` rebuilds
/// them): its [`base::ClusterEnv`], and what the operations' steps keep per process (the
/// loaded project, the progress display, the share provider's variables, read again from the
/// environment and `.env` files, never from the parameters).
pub async fn resources_for(
    operation: &str,
    params: &serde_json::Value,
) -> Result<Resources, String> {
    use serde_json::Value;
    let mut r = Resources::default();
    let Some(env) = base::cluster_env(operation, params).await? else {
        return Ok(r);
    };
    r.insert(env);
    r.insert(run::ProjectCache::default());
    let verbose = params
        .get("verbose")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let quiet = params
        .get("quiet")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    r.insert(results::Display(crate::progress::Mode::detect(
        verbose, quiet,
    )));
    if matches!(operation, "run" | "campaign" | "campaign-share") {
        // The webhook is never a parameter: read again from the environment on resume (the
        // command may replace it with `--notify`).
        r.insert(run::Notifier(crate::notify::url_from(None)?));
    }
    if operation == "upload-to-share" || operation == "campaign-share" {
        let dir = |k: &str| {
            params
                .get(k)
                .and_then(Value::as_str)
                .map(std::path::PathBuf::from)
        };
        let (vast_dir, project_dir) = (dir("vast_dir"), dir("project_dir"));
        let vars = crate::share::Vars::load(vast_dir.as_deref(), project_dir.as_deref())
            .map_err(|e| e.to_string())?;
        let (providers, _) = crate::share::providers(project_dir.as_deref());
        if let Ok(sel) = crate::share::select(&vars, &providers) {
            r.insert(share::ShareEnv(sel));
        }
    }
    Ok(r)
}

/// The registry of every step implementation.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    selftest::register(&mut r);
    setup::register(&mut r);
    cleanup::register(&mut r);
    run::register(&mut r);
    campaign::register(&mut r);
    results::register(&mut r);
    download::register(&mut r);
    share::register(&mut r);
    r
}

/// Loads and validates the embedded definition of `operation`.
pub fn definition(operation: &str) -> Option<Result<Definition, DefinitionError>> {
    let reg = registry();
    WORKFLOWS
        .iter()
        .find(|(file, _)| file.strip_suffix(".yaml") == Some(operation))
        .map(|(file, text)| {
            Definition::parse(&format!("workflows/{file}"), text, &|n| reg.contains(n))
        })
}
