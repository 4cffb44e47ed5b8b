//! One file per operation: its steps, bound to the names used in `workflows/`. This module holds
//! the step registry (implementation name → step) and the embedded workflow definitions.

pub mod cleanup;
pub mod download;
pub mod env;
pub mod results;
pub mod run;
pub mod runs;
pub mod selftest;
pub mod setup;
pub mod share;

use crate::engine::{Definition, DefinitionError, Registry};

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
];

/// Operations that talk to a cluster (their runs get a [`env::ClusterEnv`]).
pub const CLUSTER_OPERATIONS: &[&str] = &[
    "setup",
    "cleanup",
    "run",
    "run-cleanup",
    "download",
    "download-cleanup",
    "remote-compress",
    "upload-to-share",
];

pub use env::resources_for;

/// The registry of every step implementation.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    selftest::register(&mut r);
    setup::register(&mut r);
    cleanup::register(&mut r);
    run::register(&mut r);
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
