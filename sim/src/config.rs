//! Sim configuration (listen address, nodes, pod timing, data dir, watch history, faults),
//! from a YAML/JSON file, flags, and the `VAST_SIM_FAULTS` environment variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::faults::FaultConfig;

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read sim config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid sim config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("invalid VAST_SIM_FAULTS (expected the JSON of a fault config): {0}")]
    FaultsEnv(serde_json::Error),
}

/// The whole configuration; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Where the API server listens (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    pub nodes: NodesConfig,
    pub pods: PodTiming,
    /// Root of the pods' volume directories; a temporary directory (removed at shutdown)
    /// when unset.
    pub data_dir: Option<PathBuf>,
    /// Events kept for watches; a watch from an older resourceVersion gets 410 Expired.
    pub watch_history: usize,
    /// Run the controllers (scheduler/kubelet, job controller, Kueue, GC). Off: a bare API
    /// server (useful to benchmark the API alone).
    pub controllers: bool,
    pub faults: FaultConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nodes: NodesConfig::default(),
            pods: PodTiming::default(),
            data_dir: None,
            watch_history: 10_000,
            controllers: true,
            faults: FaultConfig::default(),
        }
    }
}

/// Simulated nodes, all alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodesConfig {
    pub count: u32,
    /// Allocatable cpu per node (Kubernetes quantity).
    pub cpu: String,
    /// Allocatable memory per node (Kubernetes quantity).
    pub memory: String,
    /// Maximum pods per node.
    pub pods: u32,
}

impl Default for NodesConfig {
    fn default() -> Self {
        NodesConfig {
            count: 2,
            cpu: "16".into(),
            memory: "64Gi".into(),
            pods: 110,
        }
    }
}

/// How long simulated pods take (overridable per Job or pod by annotation, see README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodTiming {
    /// From bound to Running (image pull and container start).
    pub start_ms: u64,
    /// Run time of a Job's pod; pods not owned by a Job run until deleted unless annotated.
    pub job_duration_ms: u64,
    /// Outcome of a Job's pod when not annotated: `succeed` or `fail`.
    pub job_outcome: String,
    /// Size in bytes of the `logs/system.log` a simulated scenario pod writes to its bucket
    /// (overridden per pod by the `sim.vast.dev/result-bytes` annotation).
    pub result_bytes: u64,
}

impl Default for PodTiming {
    fn default() -> Self {
        PodTiming {
            start_ms: 20,
            job_duration_ms: 200,
            job_outcome: "succeed".into(),
            result_bytes: crate::dataplane::DEFAULT_RESULT_BYTES,
        }
    }
}

impl SimConfig {
    /// Reads a YAML (or JSON) config file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|source| Error::Parse {
            path: path.into(),
            source,
        })
    }

    /// Overrides the faults with `VAST_SIM_FAULTS` (JSON) when set.
    pub fn apply_env(&mut self) -> Result<(), Error> {
        if let Ok(json) = std::env::var("VAST_SIM_FAULTS") {
            if !json.trim().is_empty() {
                self.faults = serde_json::from_str(&json).map_err(Error::FaultsEnv)?;
            }
        }
        Ok(())
    }
}
