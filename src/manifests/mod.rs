//! Rendering of every Kubernetes object vast sends to a cluster (robovast pod, Kueue queues,
//! Jobs) and `prepare-run`. Pure functions of the project, the cluster config and listed objects.
//!
//! - [`cluster_config`]: the four cluster configs (embedded from `cluster-configs/`);
//! - [`kueue`]: quota from listed Nodes/Pods and the queue objects;
//! - [`job`]: one Job per configuration × run;
//! - [`prepare`]: the `prepare-run` output tree, written to a temporary directory and renamed.

pub mod cluster_config;
pub mod job;
pub mod kueue;
pub mod prepare;

use serde_json::Value;

pub use cluster_config::{cluster_config, cluster_configs, ClusterConfig};
pub use kueue::{compute_quota, Quota, QuotaOutcome};

/// Label on every object vast creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "vast";

/// A problem while rendering.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("Cluster config '{name}' not found. Available configs: {available}")]
    UnknownClusterConfig { name: String, available: String },
    #[error("unknown option '{option}' for cluster config '{config}'; valid options: {valid}")]
    UnknownOption {
        config: String,
        option: String,
        valid: String,
    },
    #[error("Invalid option format '{0}'. Expected key=value")]
    OptionFormat(String),
    #[error(
        "invalid value '{value}' for option '{option}': use letters, digits, '-', '_' and '.' only"
    )]
    OptionValue { option: String, value: String },
    #[error("invalid namespace '{0}': must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)")]
    Namespace(String),
    #[error("cannot render {config}: {message}")]
    Template { config: String, message: String },
    #[error(transparent)]
    Resolve(#[from] crate::project::ResolveError),
}

/// Objects as one YAML stream (`---` between documents; keys sorted).
pub fn yaml_stream(objects: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(o)?);
    }
    Ok(out)
}

/// One object as YAML.
pub fn to_yaml<T: serde::Serialize>(v: &T) -> Result<String, ManifestError> {
    // Through serde_json::Value so keys come out sorted, as upstream's PyYAML dumps did.
    let v = serde_json::to_value(v).map_err(|e| ManifestError::Template {
        config: "object".into(),
        message: e.to_string(),
    })?;
    serde_yaml::to_string(&v).map_err(|e| ManifestError::Template {
        config: "object".into(),
        message: e.to_string(),
    })
}
