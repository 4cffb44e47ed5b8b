//! The user's project: `.vast` parsing, project files, configuration generation and
//! per-cluster resource resolution. Pure: no cluster access.
//!
//! - [`vast_file`]: the typed `.vast` file, errors naming file, line and field;
//! - [`configs`]: configurations from entries and variations (naming, seeded randomness);
//! - [`resources`]: per-cluster `cpu`/`memory` resolution and kubeconfig context names;
//! - [`files`]: `.robovast_project` and the saved cluster setup files;
//! - [`template`]: writing `out_template/` (our entrypoint scripts included).

pub mod configs;
pub mod files;
pub mod resources;
pub mod template;
pub mod vast_file;

pub use configs::{generate, ConfigError, Configuration};
pub use files::{ClusterSetup, Project, ProjectError};
pub use resources::{ResolveError, ResolvedResources};
pub use vast_file::{Execution, VastError, VastFile};
