//! Project files: `.robovast_project` (written by `vast init`, found by walking up from the
//! current directory) and the saved cluster setup `.robovast_cluster_config[.<ctx>]`, both in
//! upstream's formats.
//!
//! Fix of upstream weakness 24: the setup file is keyed by the *resolved* context (the
//! `--context` value, else the kubeconfig's active context), so omitting `--context` while that
//! context is active finds the same setup. A legacy unkeyed file is still read as a fallback
//! when no `--context` was given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the project file (upstream's real name; its docs say `.vast_project`).
pub const PROJECT_FILE: &str = ".robovast_project";
/// Base name of the saved cluster setup.
pub const SETUP_FILE: &str = ".robovast_cluster_config";

/// A problem with the project or setup files.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("Project not initialized. Run 'vast init <config-file>' first.")]
    NotInitialized,
    #[error("Invalid project configuration: {0}")]
    Invalid(String),
    #[error("{} already exists; use --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid saved cluster setup {}: {message}", path.display())]
    BadSetup { path: PathBuf, message: String },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ProjectError + 'a {
    move |source| ProjectError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProjectJson {
    config: String,
    results_dir: String,
    #[serde(default = "default_level")]
    log_level: String,
}

fn default_level() -> String {
    "INFO".into()
}

/// A loaded project.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// Directory holding `.robovast_project`.
    pub dir: PathBuf,
    /// The `.vast` file (absolute).
    pub config: PathBuf,
    /// Where downloads go (absolute).
    pub results_dir: PathBuf,
    pub log_level: String,
}

impl Project {
    /// Walks up from `start` to the first directory holding `.robovast_project`.
    pub fn find(start: &Path) -> Result<Project, ProjectError> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            let f = d.join(PROJECT_FILE);
            if f.is_file() {
                return Self::load(&f);
            }
            dir = d.parent();
        }
        Err(ProjectError::NotInitialized)
    }

    /// Reads one project file and checks that the `.vast` file and the results' parent exist.
    pub fn load(file: &Path) -> Result<Project, ProjectError> {
        let text = std::fs::read_to_string(file).map_err(io("read", file))?;
        let j: ProjectJson = serde_json::from_str(&text)
            .map_err(|e| ProjectError::Invalid(format!("{}: {e}", file.display())))?;
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let config = dir.join(&j.config);
        let results_dir = dir.join(&j.results_dir);
        if !config.is_file() {
            return Err(ProjectError::Invalid(format!(
                "config file not found: {}",
                config.display()
            )));
        }
        let parent = results_dir.parent().unwrap_or(&dir);
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return Err(ProjectError::Invalid(format!(
                "parent directory of results_dir does not exist: {}",
                parent.display()
            )));
        }
        Ok(Project {
            dir,
            config,
            results_dir,
            log_level: j.log_level,
        })
    }

    /// `vast init`: writes `dir/.robovast_project`. Paths under `dir` are stored relative.
    /// Without `force` an existing file is an error and the config must exist.
    pub fn init(
        dir: &Path,
        config: &Path,
        results_dir: &Path,
        log_level: &str,
        force: bool,
    ) -> Result<PathBuf, ProjectError> {
        let file = dir.join(PROJECT_FILE);
        if file.exists() && !force {
            return Err(ProjectError::Exists(file));
        }
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let rel = |p: PathBuf| -> String {
            let p = normalize(&p);
            match p.strip_prefix(normalize(dir)) {
                Ok(r) if !r.as_os_str().is_empty() => r.to_string_lossy().into_owned(),
                _ => p.to_string_lossy().into_owned(),
            }
        };
        let config_abs = abs(config);
        if !force && !config_abs.is_file() {
            return Err(ProjectError::Invalid(format!(
                "config file not found: {}",
                config.display()
            )));
        }
        let results_abs = abs(results_dir);
        if let Some(parent) = results_abs.parent() {
            if !force && !parent.is_dir() {
                return Err(ProjectError::Invalid(format!(
                    "parent directory of results_dir does not exist: {}",
                    parent.display()
                )));
            }
        }
        let j = ProjectJson {
            config: rel(config_abs),
            results_dir: rel(results_abs),
            log_level: log_level.to_uppercase(),
        };
        let text =
            serde_json::to_string_pretty(&j).map_err(|e| ProjectError::Invalid(e.to_string()))?;
        std::fs::write(&file, text + "\n").map_err(io("write", &file))?;
        Ok(file)
    }
}

/// Lexical normalisation (`a/./b/../c` → `a/c`), no filesystem access.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The `.vast` file to use: `--vast-file` if given, else the project's.
pub fn resolve_vast_file(
    override_file: Option<&Path>,
    cwd: &Path,
) -> Result<PathBuf, ProjectError> {
    match override_file {
        Some(f) => Ok(if f.is_absolute() {
            f.to_path_buf()
        } else {
            cwd.join(f)
        }),
        None => Ok(Project::find(cwd)?.config),
    }
}

/// A saved cluster setup: `{name: <config>, kwargs: {namespace: <ns>, <option>: <value>}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterSetup {
    pub name: String,
    pub kwargs: BTreeMap<String, String>,
}

impl ClusterSetup {
    /// `kwargs.namespace`, else `default`.
    pub fn namespace(&self) -> &str {
        self.kwargs
            .get("namespace")
            .map(String::as_str)
            .unwrap_or("default")
    }
}

/// File name for a context key: every char outside `[A-Za-z0-9_-]` becomes `_`.
pub fn setup_file_name(context: Option<&str>) -> String {
    match context {
        None => SETUP_FILE.to_string(),
        Some(c) => {
            let safe: String = c
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{SETUP_FILE}.{safe}")
        }
    }
}

/// Reads the saved setup for `context` (the resolved context: `--context` or the active one).
/// When `explicit` is false (no `--context` given), the legacy unkeyed file is the fallback.
pub fn read_setup(
    project_dir: &Path,
    context: Option<&str>,
    explicit: bool,
) -> Result<Option<ClusterSetup>, ProjectError> {
    let mut candidates = vec![project_dir.join(setup_file_name(context))];
    if context.is_some() && !explicit {
        candidates.push(project_dir.join(setup_file_name(None)));
    }
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
        return parse_setup(&path, &text).map(Some);
    }
    Ok(None)
}

/// The saved setups of contexts that are not among `known_contexts` (the kubeconfig's): a
/// context renamed with `kubectl config rename-context` leaves its setup file behind under the
/// old name. Sorted file names (`.robovast_cluster_config.<old>`); the legacy unkeyed file is
/// never an orphan.
pub fn orphan_setups(project_dir: &Path, known_contexts: &[String]) -> Vec<String> {
    let known: std::collections::BTreeSet<String> = known_contexts
        .iter()
        .map(|c| setup_file_name(Some(c)))
        .collect();
    let prefix = format!("{SETUP_FILE}.");
    let mut out: Vec<String> = std::fs::read_dir(project_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && n.len() > prefix.len() && !known.contains(n))
        .collect();
    out.sort();
    out
}

fn parse_setup(path: &Path, text: &str) -> Result<ClusterSetup, ProjectError> {
    let bad = |message: String| ProjectError::BadSetup {
        path: path.to_path_buf(),
        message,
    };
    let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| bad(e.to_string()))?;
    match v {
        // Legacy: the bare config name.
        serde_yaml::Value::String(name) => Ok(ClusterSetup {
            name,
            kwargs: BTreeMap::new(),
        }),
        serde_yaml::Value::Mapping(m) => {
            let name = m
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| bad("missing `name`".into()))?
                .to_string();
            let mut kwargs = BTreeMap::new();
            if let Some(serde_yaml::Value::Mapping(k)) = m.get("kwargs") {
                for (k, v) in k {
                    if let (Some(k), Some(v)) = (k.as_str(), super::vast_file::scalar_string(v)) {
                        kwargs.insert(k.to_string(), v);
                    }
                }
            }
            Ok(ClusterSetup { name, kwargs })
        }
        _ => Err(bad("expected `{name: ..., kwargs: {...}}`".into())),
    }
}

/// Writes the saved setup for the resolved `context`; returns the file written.
pub fn write_setup(
    project_dir: &Path,
    context: Option<&str>,
    setup: &ClusterSetup,
) -> Result<PathBuf, ProjectError> {
    let path = project_dir.join(setup_file_name(context));
    let mut kwargs = serde_yaml::Mapping::new();
    for (k, v) in &setup.kwargs {
        kwargs.insert(k.clone().into(), v.clone().into());
    }
    let mut m = serde_yaml::Mapping::new();
    m.insert("name".into(), setup.name.clone().into());
    m.insert("kwargs".into(), serde_yaml::Value::Mapping(kwargs));
    let text = serde_yaml::to_string(&m).map_err(|e| ProjectError::Invalid(e.to_string()))?;
    std::fs::write(&path, text).map_err(io("write", &path))?;
    Ok(path)
}

/// Removes the saved setup for `context` (and the legacy file when not explicit).
pub fn remove_setup(
    project_dir: &Path,
    context: Option<&str>,
    explicit: bool,
) -> Result<(), ProjectError> {
    let mut paths = vec![project_dir.join(setup_file_name(context))];
    if context.is_some() && !explicit {
        paths.push(project_dir.join(setup_file_name(None)));
    }
    for p in paths {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ProjectError::Io {
                    action: "remove",
                    path: p,
                    source: e,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_find_and_load() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("p.vast"), "version: 1\n").unwrap();
        let err = Project::init(
            root,
            Path::new("missing.vast"),
            Path::new("results"),
            "info",
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("config file not found"));
        // A results dir whose parent is missing is refused up front (as `load` would later).
        let err = Project::init(
            root,
            Path::new("p.vast"),
            Path::new("no/such/results"),
            "info",
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Invalid project configuration: parent directory of results_dir does not exist: {}",
                root.join("no/such").display()
            )
        );
        assert!(!root.join(PROJECT_FILE).exists());
        let f = Project::init(
            root,
            Path::new("p.vast"),
            Path::new("results"),
            "info",
            false,
        )
        .unwrap();
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"config": "p.vast", "results_dir": "results", "log_level": "INFO"})
        );
        assert!(matches!(
            Project::init(root, Path::new("p.vast"), Path::new("r"), "INFO", false),
            Err(ProjectError::Exists(_))
        ));
        let sub = root.join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let p = Project::find(&sub).unwrap();
        assert_eq!(p.config, root.join("p.vast"));
        assert_eq!(p.results_dir, root.join("results"));
        let none = tempfile::tempdir().unwrap();
        assert_eq!(
            Project::find(none.path()).unwrap_err().to_string(),
            "Project not initialized. Run 'vast init <config-file>' first."
        );
    }

    #[test]
    fn setup_keyed_by_resolved_context() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            setup_file_name(Some("gke_a/b:c")),
            ".robovast_cluster_config.gke_a_b_c"
        );
        let s = ClusterSetup {
            name: "gcp".into(),
            kwargs: [("namespace".to_string(), "ns".to_string())].into(),
        };
        // `setup -x foo` …
        write_setup(d.path(), Some("foo"), &s).unwrap();
        // … then a command without -x while foo is active resolves to the same key.
        assert_eq!(
            read_setup(d.path(), Some("foo"), false).unwrap(),
            Some(s.clone())
        );
        assert_eq!(read_setup(d.path(), Some("bar"), true).unwrap(), None);
        // Legacy unkeyed file and bare-string content.
        std::fs::write(d.path().join(SETUP_FILE), "minikube\n").unwrap();
        let legacy = read_setup(d.path(), Some("bar"), false).unwrap().unwrap();
        assert_eq!(
            (legacy.name.as_str(), legacy.namespace()),
            ("minikube", "default")
        );
        assert_eq!(read_setup(d.path(), Some("bar"), true).unwrap(), None);
        let text = std::fs::read_to_string(d.path().join(".robovast_cluster_config.foo")).unwrap();
        assert_eq!(text, "name: gcp\nkwargs:\n  namespace: ns\n");
        remove_setup(d.path(), Some("foo"), true).unwrap();
        assert_eq!(read_setup(d.path(), Some("foo"), true).unwrap(), None);
    }

    #[test]
    fn orphan_setups_are_those_of_contexts_the_kubeconfig_lacks() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            SETUP_FILE,
            ".robovast_cluster_config.vast-sim",
            ".robovast_cluster_config.lab",
            ".robovast_cluster_config.gke_a_b",
        ] {
            std::fs::write(d.path().join(f), "name: rke2\n").unwrap();
        }
        let known = vec!["lab".to_string(), "gke/a:b".to_string()];
        assert_eq!(
            orphan_setups(d.path(), &known),
            vec![".robovast_cluster_config.vast-sim".to_string()]
        );
        assert!(orphan_setups(
            d.path(),
            &["vast-sim".into(), "lab".into(), "gke/a:b".into()]
        )
        .is_empty());
    }
}
