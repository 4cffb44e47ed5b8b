//! The cluster configs (`gcp`, `rke2`, `minikube`, `azure`): their embedded manifest templates
//! and READMEs (from `cluster-configs/`), options with defaults, and instance-type commands;
//! rendering them into namespaced objects.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{ManifestError, MANAGED_BY, MANAGED_BY_LABEL};

/// MinIO server image (pinned; upstream used `:latest`).
pub const MINIO_IMAGE: &str = "minio/minio:RELEASE.2025-04-22T22-12-26Z";
/// MinIO client image of the Jobs' init container.
pub const MC_IMAGE: &str = "minio/mc:RELEASE.2025-04-16T18-13-26Z";
/// nginx serving `/data/archives`.
pub const NGINX_IMAGE: &str = "nginx:1.27.5-alpine";
/// The archiver container: python3 (stdlib) runs vast's scripts from the ConfigMap.
pub const ARCHIVER_IMAGE: &str = "python:3.12.11-alpine3.22";
/// Secret holding the S3 credentials (keys `access-key`, `secret-key`).
pub const S3_SECRET: &str = "vast-s3-credentials";
/// ConfigMap with the archiver scripts, mounted at `/opt/vast/scripts` (optional).
pub const ARCHIVER_CONFIGMAP: &str = "vast-archiver-scripts";
/// S3 endpoint inside the namespace.
pub const S3_ENDPOINT: &str = "http://robovast:9000";

/// One cluster option.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOption {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// A cluster config.
#[derive(Debug, Clone, Copy)]
pub struct ClusterConfig {
    pub name: &'static str,
    pub description: &'static str,
    manifest: &'static str,
    readme: &'static str,
    pub options: &'static [ClusterOption],
    /// Shell assignment replacing `INSTANCE_TYPE=""` in the entrypoint during `run`.
    pub instance_type_command: &'static str,
}

const STORAGE_SIZE: ClusterOption = ClusterOption {
    name: "storage_size",
    default: "10Gi",
    help: "size of the volume holding MinIO data and run archives",
};

const UNAME: &str = "INSTANCE_TYPE=$(uname -m 2>/dev/null || true)";

static CONFIGS: [ClusterConfig; 4] = [
    ClusterConfig {
        name: "azure",
        description: "Azure Kubernetes Service, PersistentVolumeClaim on managed-csi",
        manifest: include_str!("../../cluster-configs/azure/manifest.yaml"),
        readme: include_str!("../../cluster-configs/azure/README.md"),
        options: &[STORAGE_SIZE],
        instance_type_command: "INSTANCE_TYPE=$(curl -s -m 5 -H Metadata:true 'http://169.254.169.254/metadata/instance/compute/vmSize?api-version=2021-02-01&format=text' 2>/dev/null || true)",
    },
    ClusterConfig {
        name: "gcp",
        description: "Google Kubernetes Engine, ephemeral persistent-disk volume",
        manifest: include_str!("../../cluster-configs/gcp/manifest.yaml"),
        readme: include_str!("../../cluster-configs/gcp/README.md"),
        options: &[
            STORAGE_SIZE,
            ClusterOption { name: "disk_type", default: "pd-standard", help: "GCE persistent disk type" },
            ClusterOption { name: "spot", default: "false", help: "`true`: the scenario Jobs run on spot VMs only (node selector and toleration `cloud.google.com/gke-spot`); `true` or `false`" },
        ],
        instance_type_command: "INSTANCE_TYPE=$(curl -s -m 5 -H 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/instance/machine-type 2>/dev/null | awk -F/ '{print $NF}' || true)",
    },
    ClusterConfig {
        name: "minikube",
        description: "local minikube, emptyDir storage",
        manifest: include_str!("../../cluster-configs/minikube/manifest.yaml"),
        readme: include_str!("../../cluster-configs/minikube/README.md"),
        options: &[],
        instance_type_command: UNAME,
    },
    ClusterConfig {
        name: "rke2",
        description: "RKE2 and generic clusters, emptyDir storage",
        manifest: include_str!("../../cluster-configs/rke2/manifest.yaml"),
        readme: include_str!("../../cluster-configs/rke2/README.md"),
        options: &[],
        instance_type_command: UNAME,
    },
];

/// Every cluster config, sorted by name.
pub fn cluster_configs() -> &'static [ClusterConfig] {
    &CONFIGS
}

/// The config called `name`.
pub fn cluster_config(name: &str) -> Result<&'static ClusterConfig, ManifestError> {
    CONFIGS
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ManifestError::UnknownClusterConfig {
            name: name.to_string(),
            available: CONFIGS
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `setup --list` output (printed whatever the log level).
pub fn list_text() -> String {
    let mut s = String::from("Available cluster configurations:\n");
    for c in &CONFIGS {
        s.push_str(&format!("  - {}\n", c.name));
    }
    s
}

/// `key=value` → pair; anything else is upstream's error.
pub fn parse_option(s: &str) -> Result<(String, String), ManifestError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(ManifestError::OptionFormat(s.to_string())),
    }
}

/// A namespace must be a DNS-1123 label (it is written into manifests and READMEs).
pub fn validate_namespace(ns: &str) -> Result<(), ManifestError> {
    if crate::project::vast_file::is_dns_label(ns) {
        Ok(())
    } else {
        Err(ManifestError::Namespace(ns.to_string()))
    }
}

impl ClusterConfig {
    /// Defaults merged with `given`; `namespace` is accepted by every config and left out of the
    /// result. Unknown options and values that are not plain tokens are errors.
    pub fn resolve_options(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        let mut out: BTreeMap<String, String> = self
            .options
            .iter()
            .map(|o| (o.name.to_string(), o.default.to_string()))
            .collect();
        for (k, v) in given {
            if k == "namespace" {
                validate_namespace(v)?;
                continue;
            }
            if !out.contains_key(k) {
                let valid: Vec<&str> = std::iter::once("namespace")
                    .chain(self.options.iter().map(|o| o.name))
                    .collect();
                return Err(ManifestError::UnknownOption {
                    config: self.name.to_string(),
                    option: k.clone(),
                    valid: valid.join(", "),
                });
            }
            let ok = (k != "storage_size" || crate::project::vast_file::valid_quantity(v, false))
                && (k != "spot" || v == "true" || v == "false")
                && !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(ManifestError::OptionValue {
                    option: k.clone(),
                    value: v.clone(),
                });
            }
            out.insert(k.clone(), v.clone());
        }
        Ok(out)
    }

    fn substitute(
        &self,
        text: &str,
        options: &BTreeMap<String, String>,
        namespace: &str,
    ) -> String {
        let mut t = text
            .replace("{{MINIO_IMAGE}}", MINIO_IMAGE)
            .replace("{{NGINX_IMAGE}}", NGINX_IMAGE)
            .replace("{{ARCHIVER_IMAGE}}", ARCHIVER_IMAGE)
            .replace("{{NAMESPACE}}", namespace);
        for (k, v) in options {
            t = t.replace(&format!("{{{{{k}}}}}"), v);
        }
        t
    }

    /// The objects of this config, in creation order (StorageClass/PVC, Pod, Service), with
    /// `metadata.namespace` set on namespaced ones and the managed-by label on all.
    pub fn render(
        &self,
        options: &BTreeMap<String, String>,
        namespace: &str,
    ) -> Result<Vec<Value>, ManifestError> {
        validate_namespace(namespace)?;
        let options = self.resolve_options(options)?;
        let text = self.substitute(self.manifest, &options, namespace);
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).map_err(|e| ManifestError::Template {
                config: self.name.to_string(),
                message: e.to_string(),
            })?;
            if v.is_null() {
                continue;
            }
            out.push(finish_object(v, Some(namespace)));
        }
        Ok(out)
    }

    /// `robovast-manifest.yaml`: the rendered objects as one YAML stream.
    pub fn manifest_yaml(
        &self,
        options: &BTreeMap<String, String>,
        namespace: &str,
    ) -> Result<String, ManifestError> {
        super::yaml_stream(&self.render(options, namespace)?)
    }

    /// `README_<config>.md` text.
    pub fn readme(
        &self,
        options: &BTreeMap<String, String>,
        namespace: &str,
    ) -> Result<String, ManifestError> {
        validate_namespace(namespace)?;
        let options = self.resolve_options(options)?;
        Ok(self.substitute(self.readme, &options, namespace))
    }
}

const CLUSTER_SCOPED: &[&str] = &[
    "StorageClass",
    "ResourceFlavor",
    "ClusterQueue",
    "Namespace",
];

/// Adds the managed-by label and (for namespaced kinds) the namespace.
pub(crate) fn finish_object(mut v: Value, namespace: Option<&str>) -> Value {
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(ns) = namespace {
            if !CLUSTER_SCOPED.contains(&kind.as_str()) {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            }
        }
        let labels = meta
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(l) = labels.as_object_mut() {
            l.insert(MANAGED_BY_LABEL.into(), Value::String(MANAGED_BY.into()));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_defaults_and_errors() {
        let gcp = cluster_config("gcp").unwrap();
        let o = gcp.resolve_options(&BTreeMap::new()).unwrap();
        assert_eq!(o.get("storage_size").map(String::as_str), Some("10Gi"));
        assert_eq!(o.get("disk_type").map(String::as_str), Some("pd-standard"));
        let bad: BTreeMap<_, _> = [("size".to_string(), "1".to_string())].into();
        assert_eq!(
            gcp.resolve_options(&bad).unwrap_err().to_string(),
            "unknown option 'size' for cluster config 'gcp'; valid options: namespace, storage_size, disk_type, spot"
        );
        assert_eq!(o.get("spot").map(String::as_str), Some("false"));
        for ok in ["true", "false"] {
            let spot: BTreeMap<_, _> = [("spot".to_string(), ok.to_string())].into();
            assert_eq!(gcp.resolve_options(&spot).unwrap()["spot"], ok);
        }
        for bad in ["yes", "True", "1", ""] {
            let spot: BTreeMap<_, _> = [("spot".to_string(), bad.to_string())].into();
            assert!(gcp.resolve_options(&spot).is_err(), "{bad:?}");
        }
        // gcp only; the setup manifest does not change.
        let spot: BTreeMap<_, _> = [("spot".to_string(), "true".to_string())].into();
        assert!(cluster_config("rke2")
            .unwrap()
            .resolve_options(&spot)
            .is_err());
        assert_eq!(
            gcp.manifest_yaml(&spot, "ns1").unwrap(),
            gcp.manifest_yaml(&BTreeMap::new(), "ns1").unwrap()
        );
        assert!(gcp
            .readme(&spot, "ns1")
            .unwrap()
            .contains("and `spot` (`true`;"));
        let minikube = cluster_config("minikube").unwrap();
        assert_eq!(
            minikube.resolve_options(&bad).unwrap_err().to_string(),
            "unknown option 'size' for cluster config 'minikube'; valid options: namespace"
        );
        let inj: BTreeMap<_, _> = [("storage_size".to_string(), "1Gi\n  x: y".to_string())].into();
        assert!(gcp.resolve_options(&inj).is_err());
        for bad in ["Bad_NS", "-x", "x-", "", "a\n  b: c", &"a".repeat(64)] {
            let ns: BTreeMap<_, _> = [("namespace".to_string(), bad.to_string())].into();
            assert!(gcp.resolve_options(&ns).is_err(), "{bad:?}");
            assert!(gcp.render(&BTreeMap::new(), bad).is_err(), "{bad:?}");
        }
        let ns: BTreeMap<_, _> = [("namespace".to_string(), "sims-1".to_string())].into();
        assert!(gcp.resolve_options(&ns).is_ok());
        let not_qty: BTreeMap<_, _> = [("storage_size".to_string(), "big".to_string())].into();
        assert!(gcp.resolve_options(&not_qty).is_err());
        assert_eq!(
            cluster_config("aws").unwrap_err().to_string(),
            "Cluster config 'aws' not found. Available configs: azure, gcp, minikube, rke2"
        );
        assert_eq!(parse_option("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(
            parse_option("novalue").unwrap_err().to_string(),
            "Invalid option format 'novalue'. Expected key=value"
        );
        assert_eq!(
            list_text(),
            "Available cluster configurations:\n  - azure\n  - gcp\n  - minikube\n  - rke2\n"
        );
    }

    #[test]
    fn every_config_has_archiver_and_namespaced_objects() {
        for c in cluster_configs() {
            let objs = c.render(&BTreeMap::new(), "ns1").unwrap();
            let pod = objs.iter().find(|o| o["kind"] == "Pod").unwrap();
            let names: Vec<_> = pod["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].clone())
                .collect();
            assert_eq!(names, ["minio", "http-server", "archiver"], "{}", c.name);
            for o in &objs {
                assert_eq!(o["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
                let text = serde_json::to_string(o).unwrap();
                assert!(!text.contains("{{"), "{}: unreplaced placeholder", c.name);
                assert!(!text.contains(":latest"), "{}: unpinned image", c.name);
                if o["kind"] == "StorageClass" {
                    assert!(o["metadata"].get("namespace").is_none());
                } else {
                    assert_eq!(o["metadata"]["namespace"], "ns1");
                }
            }
        }
    }
}
