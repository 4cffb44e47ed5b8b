//! Per-cluster resource resolution (upstream `cluster_context.py`): kubeconfig context names,
//! the contexts a `.vast` file mentions, and resolving `cpu`/`memory` values for one context.
//!
//! Rules: scalars win on every cluster; a per-cluster list uses the entry for the given
//! context; no matching entry is an error; a list without a context asks for `--context/-x`.
//! The active context is never used as a silent fallback. The placement fields
//! (`node_selector`, `tolerations`, `priority_class`, `gpu`: [`resolve_placement`]) follow the
//! same rules with the same messages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::vast_file::{PerCluster, Placement, ResourceValue, Resources, Toleration};

/// A resource value that cannot be resolved for the requested context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("Per-cluster resource list [{}] found but no Kubernetes context was specified. Use --context/-x to select a target cluster, or replace the per-cluster list with a plain scalar value.", quoted(.keys))]
    NoContext { keys: Vec<String> },
    #[error("No resource entry found for context '{context}'. Available contexts in the per-cluster list: [{}]. Add a '{context}' entry or use a plain scalar value.", quoted(.keys))]
    NoMatch { context: String, keys: Vec<String> },
    #[error("The .vast config uses per-cluster resource lists for multiple contexts [{}]. Please specify --context/-x to select the target cluster.", quoted(.names))]
    MultiCluster { names: Vec<String> },
}

fn quoted(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolved `{cpu, memory}` for one container; `None` = not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedResources {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

/// `resolve_resource_value`: `None` stays `None`; a scalar is returned unchanged; a list needs
/// `context` and a matching entry.
pub fn resolve_resource_value(
    value: Option<&ResourceValue>,
    context: Option<&str>,
) -> Result<Option<String>, ResolveError> {
    resolve_per_cluster(value, context)
}

/// `resolve_resources`: resolves `cpu` and `memory`; unset values are dropped.
pub fn resolve_resources(
    r: &Resources,
    context: Option<&str>,
) -> Result<ResolvedResources, ResolveError> {
    Ok(ResolvedResources {
        cpu: resolve_resource_value(r.cpu.as_ref(), context)?,
        memory: resolve_resource_value(r.memory.as_ref(), context)?,
    })
}

/// Any [`PerCluster`] value resolved by the rules of [`resolve_resource_value`].
pub fn resolve_per_cluster<T: Clone>(
    value: Option<&PerCluster<T>>,
    context: Option<&str>,
) -> Result<Option<T>, ResolveError> {
    match value {
        None => Ok(None),
        Some(PerCluster::Scalar(v)) => Ok(Some(v.clone())),
        Some(PerCluster::PerCluster(list)) if list.is_empty() => Ok(None),
        Some(PerCluster::PerCluster(list)) => {
            let keys: Vec<String> = list.iter().map(|(k, _)| k.clone()).collect();
            let Some(ctx) = context else {
                return Err(ResolveError::NoContext { keys });
            };
            list.iter()
                .find(|(k, _)| k == ctx)
                .map(|(_, v)| Some(v.clone()))
                .ok_or_else(|| ResolveError::NoMatch {
                    context: ctx.to_string(),
                    keys,
                })
        }
    }
}

/// The placement of a Job's pod for one context; empty values mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedPlacement {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub priority_class: Option<String>,
    /// `nvidia.com/gpu` of the main container; 0 = none.
    pub gpu: u32,
}

/// Resolves every placement field for `context`.
pub fn resolve_placement(
    p: &Placement,
    context: Option<&str>,
) -> Result<ResolvedPlacement, ResolveError> {
    Ok(ResolvedPlacement {
        node_selector: resolve_per_cluster(p.node_selector.as_ref(), context)?.unwrap_or_default(),
        tolerations: resolve_per_cluster(p.tolerations.as_ref(), context)?.unwrap_or_default(),
        priority_class: resolve_per_cluster(p.priority_class.as_ref(), context)?,
        gpu: resolve_per_cluster(p.gpu.as_ref(), context)?.unwrap_or(0),
    })
}

/// `get_config_context_names`: every context key of a per-cluster list under a `cpu` or
/// `memory` key anywhere in the YAML file, and (ours) under the placement keys
/// `node_selector`, `priority_class`, `gpu` and `tolerations` (there only entries whose value
/// is a list: a plain toleration can be a single-key mapping too). Unreadable or invalid file → empty set.
pub fn config_context_names(path: &Path) -> BTreeSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeSet::new();
    };
    context_names_in_text(&text)
}

/// [`config_context_names`] on text (first YAML document).
pub fn context_names_in_text(text: &str) -> BTreeSet<String> {
    use serde::Deserialize;
    let mut out = BTreeSet::new();
    let Some(doc) = serde_yaml::Deserializer::from_str(text).next() else {
        return out;
    };
    let Ok(v) = Value::deserialize(doc) else {
        return out;
    };
    walk(&v, &mut out);
    out
}

fn walk(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                let key = k.as_str();
                if matches!(
                    key,
                    Some(
                        "cpu"
                            | "memory"
                            | "node_selector"
                            | "priority_class"
                            | "gpu"
                            | "tolerations"
                    )
                ) {
                    if let Value::Sequence(items) = val {
                        let all_single = !items.is_empty()
                            && items.iter().all(|i| match i {
                                Value::Mapping(m) if key == Some("tolerations") => {
                                    m.len() == 1 && m.values().all(Value::is_sequence)
                                }
                                Value::Mapping(m) => m.len() == 1,
                                _ => false,
                            });
                        if all_single {
                            for i in items {
                                if let Value::Mapping(m) = i {
                                    out.extend(
                                        m.keys().filter_map(|k| k.as_str().map(String::from)),
                                    );
                                }
                            }
                        }
                    }
                }
                walk(val, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| walk(i, out)),
        _ => {}
    }
}

/// `require_context_for_multi_cluster`: with no `--context` and more than one context named in
/// the `.vast` file's per-cluster lists, asks for `--context/-x`.
pub fn require_context_for_multi_cluster(
    context: Option<&str>,
    vast_file: Option<&Path>,
) -> Result<(), ResolveError> {
    if context.is_some() {
        return Ok(());
    }
    let Some(path) = vast_file else { return Ok(()) };
    let names = config_context_names(path);
    if names.len() <= 1 {
        return Ok(());
    }
    Err(ResolveError::MultiCluster {
        names: names.into_iter().collect(),
    })
}

/// The first of [`kubeconfig_paths`].
pub fn kubeconfig_path() -> Option<PathBuf> {
    kubeconfig_paths().into_iter().next()
}

/// Every kubeconfig file kubectl merges: the entries of `$KUBECONFIG`, else `~/.kube/config`.
pub fn kubeconfig_paths() -> Vec<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECONFIG") {
        let paths: Vec<PathBuf> = std::env::split_paths(&k)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return paths;
        }
    }
    std::env::var_os("HOME")
        .map(|h| vec![PathBuf::from(h).join(".kube").join("config")])
        .unwrap_or_default()
}

/// `get_active_kube_context`: the kubeconfig's `current-context`; `None` on any error.
pub fn active_kube_context() -> Option<String> {
    active_context_of(&kubeconfig_paths())
}

/// The `current-context` of merged kubeconfig files: as kubectl, the first file that sets it
/// wins; unreadable files are skipped.
pub fn active_context_of(paths: &[PathBuf]) -> Option<String> {
    paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| active_context_in(&t))
}

/// The `current-context` of kubeconfig text.
pub fn active_context_in(text: &str) -> Option<String> {
    let v: Value = serde_yaml::from_str(text).ok()?;
    let c = v.get("current-context")?.as_str()?;
    (!c.is_empty()).then(|| c.to_string())
}

/// `list_all_contexts`: every context name of the (merged) kubeconfig, sorted; empty on error.
pub fn list_all_contexts() -> Vec<String> {
    let mut names: Vec<String> = kubeconfig_paths()
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| contexts_in(&t))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Context names in kubeconfig text, sorted.
pub fn contexts_in(text: &str) -> Vec<String> {
    let Ok(v) = serde_yaml::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut names: Vec<String> = v
        .get("contexts")
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(&str, &str)]) -> ResourceValue {
        ResourceValue::PerCluster(
            entries
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn resolution_table() {
        let l = list(&[("gcp-c4", "4"), ("local", "8")]);
        let scalar = ResourceValue::Scalar("2".into());
        type Case<'a> = (
            Option<&'a ResourceValue>,
            Option<&'a str>,
            Result<Option<String>, String>,
        );
        let cases: Vec<Case> = vec![
            (None, None, Ok(None)),
            (None, Some("x"), Ok(None)),
            (Some(&scalar), None, Ok(Some("2".into()))),
            (Some(&scalar), Some("gcp-c4"), Ok(Some("2".into()))),
            (Some(&l), Some("gcp-c4"), Ok(Some("4".into()))),
            (Some(&l), Some("local"), Ok(Some("8".into()))),
            (Some(&l), None, Err("Per-cluster resource list ['gcp-c4', 'local'] found but no Kubernetes context was specified. Use --context/-x to select a target cluster, or replace the per-cluster list with a plain scalar value.".into())),
            (Some(&l), Some("other"), Err("No resource entry found for context 'other'. Available contexts in the per-cluster list: ['gcp-c4', 'local']. Add a 'other' entry or use a plain scalar value.".into())),
        ];
        for (v, ctx, want) in cases {
            let got = resolve_resource_value(v, ctx).map_err(|e| e.to_string());
            assert_eq!(got, want, "value {v:?} context {ctx:?}");
        }
        assert_eq!(resolve_resource_value(Some(&list(&[])), None), Ok(None));
    }

    #[test]
    fn mixed_resources() {
        let r = Resources {
            cpu: Some(ResourceValue::Scalar("3".into())),
            memory: Some(list(&[("a", "1Gi"), ("b", "2Gi")])),
        };
        assert_eq!(
            resolve_resources(&r, Some("b")).unwrap(),
            ResolvedResources {
                cpu: Some("3".into()),
                memory: Some("2Gi".into())
            }
        );
        assert!(resolve_resources(&r, None).is_err());
    }

    #[test]
    fn context_names_and_multi_cluster() {
        let text = "execution:\n  resources:\n    cpu:\n      - gcp-c4: 4\n      - local: 8\n  secondary_containers:\n    - nav:\n        resources:\n          memory:\n            - other: 1Gi\n";
        let names = context_names_in_text(text);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["gcp-c4", "local", "other"]
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.vast");
        std::fs::write(&p, text).unwrap();
        let err = require_context_for_multi_cluster(None, Some(&p)).unwrap_err();
        assert_eq!(err.to_string(), "The .vast config uses per-cluster resource lists for multiple contexts ['gcp-c4', 'local', 'other']. Please specify --context/-x to select the target cluster.");
        assert!(require_context_for_multi_cluster(Some("local"), Some(&p)).is_ok());
        std::fs::write(&p, "execution:\n  resources:\n    cpu:\n      - only: 4\n").unwrap();
        assert!(require_context_for_multi_cluster(None, Some(&p)).is_ok());
        assert!(require_context_for_multi_cluster(None, None).is_ok());
        assert!(config_context_names(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn placement_follows_the_same_rules() {
        let text = "version: 1\nexecution:\n  image: i\n  runs: 1\n  scenario_file: s\n  gpu: [{gke: 1}, {local: 0}]\n  node_selector: {pool: a}\n  tolerations:\n    - gke: [{key: a, operator: Exists}]\n    - local: []\n  priority_class: [{gke: high}]\n";
        let v = crate::project::VastFile::parse(Path::new("x.vast"), text).unwrap();
        let p = &v.execution.placement;
        let gke = resolve_placement(p, Some("gke")).unwrap();
        assert_eq!(gke.gpu, 1);
        assert_eq!(gke.node_selector["pool"], "a");
        assert_eq!(gke.tolerations.len(), 1);
        assert_eq!(gke.priority_class.as_deref(), Some("high"));
        let err = resolve_placement(p, Some("local")).unwrap_err();
        assert_eq!(err.to_string(), "No resource entry found for context 'local'. Available contexts in the per-cluster list: ['gke']. Add a 'local' entry or use a plain scalar value.");
        assert!(matches!(
            resolve_placement(p, None),
            Err(ResolveError::NoContext { .. })
        ));
        assert_eq!(
            resolve_placement(&Default::default(), None).unwrap(),
            ResolvedPlacement::default()
        );
        // Their contexts count for --context/-x; a plain toleration list does not.
        assert_eq!(
            context_names_in_text(text).into_iter().collect::<Vec<_>>(),
            vec!["gke", "local"]
        );
        let plain = "execution:\n  tolerations:\n    - operator: Exists\n    - {key: a, operator: Exists}\n";
        assert!(context_names_in_text(plain).is_empty());
    }

    #[test]
    fn kubeconfig_contexts() {
        let kc = "apiVersion: v1\ncurrent-context: b\ncontexts:\n- name: b\n  context: {cluster: x}\n- name: a\n  context: {cluster: y}\n";
        assert_eq!(active_context_in(kc).as_deref(), Some("b"));
        assert_eq!(contexts_in(kc), vec!["a", "b"]);
        assert_eq!(active_context_in("current-context: ''\n"), None);
        assert_eq!(active_context_in(": : bad"), None);
        // Merged files (KUBECONFIG=a:b): the first file that sets current-context wins.
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        std::fs::write(&a, "apiVersion: v1\ncontexts: []\n").unwrap();
        std::fs::write(&b, kc).unwrap();
        std::fs::write(&c, "current-context: c\n").unwrap();
        let missing = d.path().join("missing");
        assert_eq!(
            active_context_of(&[missing, a.clone(), b.clone(), c.clone()]).as_deref(),
            Some("b")
        );
        assert_eq!(active_context_of(&[a]), None);
    }
}
