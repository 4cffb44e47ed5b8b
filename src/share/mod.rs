//! Share providers for `upload-to-share`: the built-in `nextcloud` and `gdrive`, and plugins
//! found on a search path, all described the same way (a `provider.yaml` manifest: required
//! variables with descriptions, the pod-side upload script, and the variables the script
//! gets); `.env` loading; validation of the variables before any cluster access; and the
//! values that go into the Secret `vast-share` mounted into the archiver container.
//!
//! Plugin search path, first match wins: every directory of `VAST_SHARE_PROVIDERS_PATH`
//! (`:`-separated), `<project>/.vast/share-providers/`, `$XDG_CONFIG_HOME/vast/share-providers/`
//! (default `~/.config/vast/share-providers/`). A plugin is a directory holding
//! `provider.yaml` and its script. See `src/share/README.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A variable the script gets: a template (`${VAR}`, `${VAR:-default}`) or a local file's
/// content.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PodValue {
    Template(String),
    File { file: String },
}

/// A provider manifest (`provider.yaml`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `ROBOVAST_SHARE_TYPE` value.
    #[serde(rename = "type")]
    pub share_type: String,
    #[serde(default)]
    pub description: String,
    /// Display name in messages (`Nextcloud`, `Google Drive`).
    #[serde(default)]
    pub display_name: Option<String>,
    /// The upload script (file name in the provider directory).
    pub script: String,
    /// Variables that must be set and non-empty: name → description.
    #[serde(default)]
    pub required: BTreeMap<String, String>,
    /// Variables the script gets through the Secret: name → value.
    #[serde(default)]
    pub pod_env: BTreeMap<String, PodValue>,
    /// Variables holding local file paths that must exist (name → what the file is).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// A provider ready to use.
#[derive(Debug, Clone)]
pub struct Provider {
    pub manifest: Manifest,
    /// The script's text.
    pub script: String,
    /// Where it came from (`built-in` or the plugin directory).
    pub origin: String,
    pub builtin: bool,
}

impl Provider {
    /// The ConfigMap key of its script.
    pub fn script_key(&self) -> String {
        if self.builtin {
            self.manifest.script.clone()
        } else {
            format!("share-{}.py", self.manifest.share_type)
        }
    }
    pub fn display_name(&self) -> String {
        self.manifest
            .display_name
            .clone()
            .unwrap_or_else(|| self.manifest.share_type.clone())
    }
}

const BUILTIN: &[(&str, &str, &str)] = &[
    (
        include_str!("nextcloud.yaml"),
        "upload_nextcloud.py",
        include_str!("../pod/scripts/upload_nextcloud.py"),
    ),
    (
        include_str!("gdrive.yaml"),
        "upload_gdrive.py",
        include_str!("../pod/scripts/upload_gdrive.py"),
    ),
];

/// Problems with the share configuration (all before any cluster access; exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {message}")]
    Plugin { path: PathBuf, message: String },
}

fn builtins() -> Vec<Provider> {
    BUILTIN
        .iter()
        .filter_map(|(yaml, _, script)| {
            let manifest: Manifest = serde_yaml::from_str(yaml).ok()?;
            Some(Provider {
                manifest,
                script: script.to_string(),
                origin: "built-in".into(),
                builtin: true,
            })
        })
        .collect()
}

/// The plugin directories to search, in order.
pub fn search_path(project_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(p) = std::env::var_os("VAST_SHARE_PROVIDERS_PATH") {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    if let Some(p) = project_dir {
        dirs.push(p.join(".vast").join("share-providers"));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config {
        dirs.push(c.join("vast").join("share-providers"));
    }
    dirs
}

/// Every provider: the built-ins, then plugins from the search path (a plugin that cannot be
/// loaded is reported in `warnings`, as upstream warned about broken entry points).
pub fn providers(project_dir: Option<&Path>) -> (Vec<Provider>, Vec<String>) {
    let mut out = builtins();
    let mut warnings = Vec::new();
    for dir in search_path(project_dir) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut subdirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        subdirs.sort();
        for d in subdirs {
            let manifest_path = d.join("provider.yaml");
            if !manifest_path.is_file() {
                continue;
            }
            match load_plugin(&d) {
                Ok(p) => {
                    let taken = out
                        .iter()
                        .find(|o| o.manifest.share_type == p.manifest.share_type)
                        .map(|o| o.origin.clone());
                    match taken {
                        Some(by) => warnings.push(format!(
                            "share provider '{}' in {} ignored: the name is taken by {by}",
                            p.manifest.share_type,
                            d.display(),
                        )),
                        None => out.push(p),
                    }
                }
                Err(e) => warnings.push(format!("Failed to load share provider: {e}")),
            }
        }
    }
    (out, warnings)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_var(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Loads the plugin in `dir`.
pub fn load_plugin(dir: &Path) -> Result<Provider, ShareError> {
    let path = dir.join("provider.yaml");
    let err = |message: String| ShareError::Plugin {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let manifest: Manifest = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
    if !valid_name(&manifest.share_type) {
        return Err(err(format!(
            "type '{}' must be lowercase letters, digits, '-' or '_'",
            manifest.share_type
        )));
    }
    for k in manifest.pod_env.keys() {
        if !valid_var(k) {
            return Err(err(format!("pod_env variable '{k}' is not a valid name")));
        }
    }
    let script_path = dir.join(&manifest.script);
    if manifest.script.contains('/') || manifest.script.contains("..") {
        return Err(err(format!(
            "script '{}' must be a file name in the provider directory",
            manifest.script
        )));
    }
    let script = std::fs::read_to_string(&script_path).map_err(|e| ShareError::Plugin {
        path: script_path.clone(),
        message: format!("Cannot read upload script: {e}"),
    })?;
    Ok(Provider {
        manifest,
        script,
        origin: dir.display().to_string(),
        builtin: false,
    })
}

/// Variables from the `.env` files and the process: the process environment wins, then
/// the first file that sets a variable (`files` in order).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    file_values: BTreeMap<String, String>,
}

impl Vars {
    /// Loads `.env` from the `.vast` file's directory, the project directory, then the current
    /// directory and its parents.
    pub fn load(vast_dir: Option<&Path>, project_dir: Option<&Path>) -> Result<Vars, ShareError> {
        let mut files: Vec<PathBuf> = Vec::new();
        if let Some(d) = vast_dir {
            files.push(d.join(".env"));
        }
        if let Some(d) = project_dir {
            files.push(d.join(".env"));
        }
        if let Ok(cwd) = std::env::current_dir() {
            let mut d = Some(cwd.as_path());
            while let Some(dir) = d {
                files.push(dir.join(".env"));
                d = dir.parent();
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut vars = Vars::default();
        for f in files {
            if !seen.insert(f.clone()) || !f.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&f)
                .map_err(|e| ShareError::Usage(format!("cannot read {}: {e}", f.display())))?;
            for (k, v) in parse_dotenv(&text) {
                vars.file_values.entry(k).or_insert(v);
            }
        }
        Ok(vars)
    }

    /// A variable's value (process environment first); empty counts as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.file_values.get(name).cloned())
            .filter(|v| !v.trim().is_empty())
    }
}

/// Parses a `.env` file with `dotenvy`: `KEY=VALUE`, `export KEY=VALUE`, `#` comments,
/// single quotes (literal) or double quotes (escapes such as `\n`; `$VAR` / `${VAR}` expanded
/// from earlier lines and the environment, as in unquoted values). Lines that do not parse and
/// names that are not variable names are skipped.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    dotenvy::from_read_iter(text.as_bytes())
        .filter_map(Result::ok)
        .filter(|(k, _)| valid_var(k))
        .collect()
}

/// The chosen provider with its validated variables.
#[derive(Clone)]
pub struct Selected {
    pub provider: Provider,
    /// What the script gets (secret values; never printed, never in run parameters).
    pub pod_env: BTreeMap<String, String>,
    /// `ROBOVAST_SHARE_URL` with its token masked, for display.
    pub display_url: Option<String>,
}

impl std::fmt::Debug for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selected")
            .field("provider", &self.provider.manifest.share_type)
            .field("pod_env", &self.pod_env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Selected {
    /// A hash of the values (the Secret carries it, so vast sees when the pod mounts them).
    pub fn version(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.pod_env {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// Masks the token of a share URL (`…/s/<token>` → `…/s/***`).
pub fn redact_url(url: &str) -> String {
    match url.find("/s/") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            format!("{}/s/***{}", &url[..i], &rest[end..])
        }
        None => url.to_string(),
    }
}

/// Chooses and validates the provider named by `ROBOVAST_SHARE_TYPE`, with upstream's
/// messages.
pub fn select(vars: &Vars, providers: &[Provider]) -> Result<Selected, ShareError> {
    let mut names: Vec<&str> = providers
        .iter()
        .map(|p| p.manifest.share_type.as_str())
        .collect();
    names.sort();
    let Some(kind) = vars.get("ROBOVAST_SHARE_TYPE") else {
        return Err(ShareError::Usage(format!(
            "ROBOVAST_SHARE_TYPE is not set.\nAdd it to a .env file in your project directory.\nSupported values: {}\nExample .env:\n  ROBOVAST_SHARE_TYPE=nextcloud\n  ROBOVAST_SHARE_URL=https://cloud.example.com/s/AbCdEfGhIjKlMn",
            names.join(", ")
        )));
    };
    let kind = kind.trim().to_string();
    let Some(provider) = providers.iter().find(|p| p.manifest.share_type == kind) else {
        return Err(ShareError::Usage(format!(
            "Unknown share type '{kind}'.\nAvailable providers: {}",
            if names.is_empty() {
                "(none installed)".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let missing: Vec<(&String, &String)> = provider
        .manifest
        .required
        .iter()
        .filter(|(k, _)| vars.get(k).is_none())
        .collect();
    if !missing.is_empty() {
        let mut m = format!("Missing environment variable(s) required for share type '{kind}':\n");
        for (k, d) in missing {
            m.push_str(&format!("  {k}  — {d}\n"));
        }
        m.push_str("\nSet these variables in a .env file in your project directory.");
        return Err(ShareError::Usage(m));
    }
    for (var, what) in &provider.manifest.files {
        if let Some(p) = vars.get(var) {
            if !Path::new(&p).is_file() {
                return Err(ShareError::Usage(format!(
                    "{what} not found: {p}\nSet {var} to the path of the file."
                )));
            }
        }
    }
    let mut pod_env = BTreeMap::new();
    for (k, v) in &provider.manifest.pod_env {
        let value = match v {
            PodValue::Template(t) => expand(t, vars),
            PodValue::File { file } => {
                let path = expand(file, vars);
                if path.is_empty() {
                    continue;
                }
                std::fs::read_to_string(&path)
                    .map_err(|e| ShareError::Usage(format!("cannot read {path} (for {k}): {e}")))?
            }
        };
        if !value.is_empty() {
            pod_env.insert(k.clone(), value);
        }
    }
    let display_url = vars.get("ROBOVAST_SHARE_URL").map(|u| redact_url(&u));
    Ok(Selected {
        provider: provider.clone(),
        pod_env,
        display_url,
    })
}

/// Expands `${VAR}` and `${VAR:-default}`.
fn expand(t: &str, vars: &Vars) -> String {
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, d),
            None => (inner, ""),
        };
        out.push_str(&vars.get(name).unwrap_or_else(|| default.to_string()));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_are_parsed() {
        let v = parse_dotenv(
            "# c\nA=1\nexport B='two words'\nC=\"x\\ny\"\nD=plain # comment\nbad line\n",
        );
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x\ny".into()),
                ("D".into(), "plain".into()),
            ]
        );
    }

    #[test]
    fn builtins_load() {
        let b = builtins();
        let names: Vec<&str> = b.iter().map(|p| p.manifest.share_type.as_str()).collect();
        assert_eq!(names, ["nextcloud", "gdrive"]);
        assert!(b.iter().all(|p| !p.script.is_empty()));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://c.example.com/nc/s/AbCd123"),
            "https://c.example.com/nc/s/***"
        );
        assert_eq!(
            redact_url("https://c.example.com/index.php/s/AbCd/x"),
            "https://c.example.com/index.php/s/***/x"
        );
        assert_eq!(redact_url("folder-id"), "folder-id");
    }
}
