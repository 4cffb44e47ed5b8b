//! A pod as the data plane sees it: the controllers resolve env (`secretKeyRef`,
//! `configMapKeyRef`, `fieldRef`, `resourceFieldRef`) and volume sources against the object
//! store and hand the data plane this plain description.

use std::collections::BTreeMap;

/// A running pod, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Init containers first (in order), then regular containers.
    pub init_containers: Vec<ResolvedContainer>,
    pub containers: Vec<ResolvedContainer>,
    pub volumes: Vec<ResolvedVolume>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedContainer {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Environment with every reference resolved (values of missing optional refs omitted).
    pub env: BTreeMap<String, String>,
    /// `containerPort`s.
    pub ports: Vec<u16>,
    pub mounts: Vec<ResolvedMount>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedMount {
    pub volume: String,
    pub mount_path: String,
    /// `subPath`: only this sub-directory of the volume is mounted.
    pub sub_path: Option<String>,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedVolume {
    /// `emptyDir` (also `medium: Memory`): wiped when the pod restarts with wipe semantics.
    EmptyDir { name: String },
    /// A PVC or a generic ephemeral volume: kept across pod restarts.
    Persistent { name: String, claim: String },
    /// `configMap` volume: file name -> content.
    ConfigMap {
        name: String,
        files: BTreeMap<String, Vec<u8>>,
    },
    /// `secret` volume: file name -> content (already base64-decoded).
    Secret {
        name: String,
        files: BTreeMap<String, Vec<u8>>,
    },
}

impl ResolvedVolume {
    pub fn name(&self) -> &str {
        match self {
            ResolvedVolume::EmptyDir { name }
            | ResolvedVolume::Persistent { name, .. }
            | ResolvedVolume::ConfigMap { name, .. }
            | ResolvedVolume::Secret { name, .. } => name,
        }
    }
}

/// How a simulated scenario pod ended, as decided by the job controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodOutcome {
    Succeeded,
    Failed,
}
