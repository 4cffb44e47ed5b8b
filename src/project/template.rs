//! Writing `out_template/`: the entrypoint scripts, the scenario, `_config/configurations.yaml`,
//! the test files and one directory per configuration (`config.yaml`, `scenario.config`).
//!
//! The scenario is always written as `scenario.osc` (the name the Jobs and entrypoint use;
//! upstream kept the original basename and then failed to find anything else).

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

use super::configs::Configuration;
use super::vast_file::VastFile;

const ENTRYPOINT: &str = include_str!("scripts/entrypoint.sh");
const SECONDARY_ENTRYPOINT: &str = include_str!("scripts/secondary_entrypoint.sh");
const UPLOAD_BLOCK: &str = include_str!("scripts/upload_block.sh");
const COLLECT_SYSINFO: &str = include_str!("scripts/collect_sysinfo.py");
const LOCAL_INIT_BLOCK: &str = "eval \"$(fixuid -q)\"";

/// The name of the scenario file inside `out_template/` and `/config/`.
pub const SCENARIO_NAME: &str = "scenario.osc";

/// Cluster (Jobs upload to S3) or local (`vast configuration generate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cluster,
    Local,
}

/// A problem while collecting or writing template files.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario file {}: no `scenario <name>:` declaration found (needed to write scenario.config)", .0.display())]
    NoScenarioName(PathBuf),
    #[error("configuration '{config}': parameter '{parameter}' is not declared by scenario '{scenario}' (declared: {declared})")]
    UnknownParameter {
        config: String,
        parameter: String,
        scenario: String,
        declared: String,
    },
    #[error("cannot serialise {what}: {message}")]
    Yaml { what: String, message: String },
    #[error("{}: execution.test_files_filter: pattern '{pattern}' matches no file under {}", file.display(), dir.display())]
    NoMatch {
        file: PathBuf,
        pattern: String,
        dir: PathBuf,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TemplateError + 'a {
    move |source| TemplateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The main entrypoint script for `mode`.
pub fn entrypoint_script(mode: Mode) -> String {
    let (init, upload) = match mode {
        Mode::Cluster => ("", UPLOAD_BLOCK),
        Mode::Local => (LOCAL_INIT_BLOCK, ""),
    };
    ENTRYPOINT
        .replace("# @@INIT_BLOCK@@", init)
        .replace("# @@UPLOAD_BLOCK@@", upload.trim_end())
}

/// The entrypoint with the cluster config's instance-type command injected (done by `run`).
pub fn with_instance_type(entrypoint: &str, command: &str) -> String {
    entrypoint.replacen("INSTANCE_TYPE=\"\"", command, 1)
}

/// The secondary-container entrypoint for `mode`.
pub fn secondary_entrypoint_script(mode: Mode) -> String {
    let init = if mode == Mode::Local {
        LOCAL_INIT_BLOCK
    } else {
        ""
    };
    SECONDARY_ENTRYPOINT.replace("# @@INIT_BLOCK@@", init)
}

/// Files matched by `execution.test_files_filter`, relative to the `.vast` directory,
/// `/`-separated and sorted. Gitignore-like: `*` does not cross `/`, `**` does, a pattern
/// without `/` matches file names at any depth. Hidden directories are skipped.
pub fn collect_test_files(vast: &VastFile) -> Result<Vec<String>, TemplateError> {
    let filters = &vast.execution.test_files_filter;
    if filters.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = globset::GlobSetBuilder::new();
    for f in filters {
        // gitignore semantics: a pattern without '/' matches the file name at any depth;
        // a leading '/' anchors the pattern at the `.vast` directory.
        let p = f.trim_start_matches("./");
        let p = if p.contains('/') {
            p.trim_start_matches('/').to_string()
        } else {
            format!("**/{p}")
        };
        let g = globset::GlobBuilder::new(&p)
            .literal_separator(true)
            .build()
            .map_err(|e| TemplateError::Yaml {
                what: format!("glob '{f}'"),
                message: e.to_string(),
            })?;
        b.add(g);
    }
    let set = b.build().map_err(|e| TemplateError::Yaml {
        what: "test_files_filter".into(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    let mut matched = vec![false; filters.len()];
    let mut stack = vec![vast.dir.clone()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(io("list", &dir))?;
        for entry in rd {
            let entry = entry.map_err(io("list", &dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            let ft = entry.file_type().map_err(io("stat", &path))?;
            if ft.is_dir() {
                if !name.starts_with('.') {
                    stack.push(path);
                }
                continue;
            }
            let Ok(rel) = path.strip_prefix(&vast.dir) else {
                continue;
            };
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let hits = set.matches(&rel);
            if !hits.is_empty() {
                for i in hits {
                    matched[i] = true;
                }
                out.push(rel);
            }
        }
    }
    // A pattern that matches nothing is a mistake (a PRE_COMMAND would then name a file that
    // is never shipped): an error naming the pattern, before anything is created.
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(TemplateError::NoMatch {
            file: vast.path.clone(),
            pattern: filters[i].clone(),
            dir: vast.dir.clone(),
        });
    }
    out.sort();
    Ok(out)
}

/// The scenario name declared in an OpenSCENARIO 2 file (`scenario <name>:`).
pub fn scenario_name(osc: &str) -> Option<String> {
    osc.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("scenario ")?;
        let name = rest.split(':').next()?.trim();
        (!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .then(|| name.to_string())
    })
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// The scenario name and the parameters it declares: `name: type [= default]` lines directly
/// inside the `scenario <name>:` block (actions, `do …:` and `var …` lines are not parameters).
pub fn scenario_parameters(osc: &str) -> Option<(String, Vec<String>)> {
    let mut lines = osc.lines();
    let mut header = None;
    for l in lines.by_ref() {
        if let Some(name) = scenario_name(l) {
            header = Some((name, indent(l)));
            break;
        }
    }
    let (name, header_indent) = header?;
    let mut body_indent = None;
    let mut params = Vec::new();
    for l in lines {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = indent(l);
        if ind <= header_indent {
            break;
        }
        if ind != *body_indent.get_or_insert(ind) {
            continue;
        }
        if let Some((k, rest)) = t.split_once(':') {
            let k = k.trim();
            let ident = !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_');
            if ident && !rest.trim().is_empty() {
                params.push(k.to_string());
            }
        }
    }
    Some((name, params))
}

/// Every configuration parameter must be declared by the scenario (as upstream validates).
pub fn validate_parameters(
    vast: &VastFile,
    configs: &[Configuration],
) -> Result<(), TemplateError> {
    if configs.iter().all(|c| c.parameters.is_empty()) {
        return Ok(());
    }
    let path = vast.scenario_path();
    let text = std::fs::read_to_string(&path).map_err(io("read scenario file", &path))?;
    let Some((scenario, declared)) = scenario_parameters(&text) else {
        return Err(TemplateError::NoScenarioName(path));
    };
    for c in configs {
        for (p, _) in &c.parameters {
            if !declared.contains(p) {
                return Err(TemplateError::UnknownParameter {
                    config: c.name.clone(),
                    parameter: p.clone(),
                    scenario,
                    declared: if declared.is_empty() {
                        "none".into()
                    } else {
                        declared.join(", ")
                    },
                });
            }
        }
    }
    Ok(())
}

fn hash12(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())[..12].to_string()
}

fn yaml<T: serde::Serialize>(what: &str, v: &T) -> Result<String, TemplateError> {
    serde_yaml::to_string(v).map_err(|e| TemplateError::Yaml {
        what: what.to_string(),
        message: e.to_string(),
    })
}

fn write(path: &Path, content: &[u8], exec: bool) -> Result<(), TemplateError> {
    write_file(path, content, exec, |action, path, source| {
        TemplateError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes `content` to `path`, creating parent directories, mode 0755 when `exec`; an I/O
/// failure becomes the caller's error through `err(action, path, source)`. Shared by the
/// template writer and prepare-run.
pub(crate) fn write_file<E>(
    path: &Path,
    content: &[u8],
    exec: bool,
    err: impl Fn(&'static str, &Path, std::io::Error) -> E,
) -> Result<(), E> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err("create", parent, e))?;
    }
    std::fs::write(path, content).map_err(|e| err("write", path, e))?;
    #[cfg(unix)]
    if exec {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err("chmod", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = exec;
    Ok(())
}

/// Writes `out_dir/` (which becomes `out_template/`) for `configs`. `created_at` is recorded
/// in `configurations.yaml`. Returns the test files written under `_config/`.
pub fn write_out_template(
    out_dir: &Path,
    vast: &VastFile,
    configs: &[Configuration],
    mode: Mode,
    created_at: &str,
) -> Result<Vec<String>, TemplateError> {
    let scenario_path = vast.scenario_path();
    let scenario =
        std::fs::read(&scenario_path).map_err(io("read scenario file", &scenario_path))?;
    validate_parameters(vast, configs)?;
    let test_files = collect_test_files(vast)?;
    let needs_name = configs.iter().any(|c| !c.parameters.is_empty());
    let name = scenario_name(&String::from_utf8_lossy(&scenario));
    if needs_name && name.is_none() {
        return Err(TemplateError::NoScenarioName(scenario_path));
    }

    write(
        &out_dir.join("entrypoint.sh"),
        entrypoint_script(mode).as_bytes(),
        true,
    )?;
    write(
        &out_dir.join("secondary_entrypoint.sh"),
        secondary_entrypoint_script(mode).as_bytes(),
        true,
    )?;
    write(
        &out_dir.join("collect_sysinfo.py"),
        COLLECT_SYSINFO.as_bytes(),
        true,
    )?;
    write(&out_dir.join(SCENARIO_NAME), &scenario, false)?;

    let mut test_contents: Vec<Vec<u8>> = Vec::new();
    for rel in &test_files {
        let src = vast.dir.join(rel);
        let data = std::fs::read(&src).map_err(io("read test file", &src))?;
        let exec = is_executable(&src) || rel.ends_with(".sh") || rel.ends_with(".py");
        write(&out_dir.join("_config").join(rel), &data, exec)?;
        test_contents.push(data);
    }

    // _config/configurations.yaml
    let mut run_data = Mapping::new();
    let vast_name = vast
        .path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    run_data.insert("vast".into(), vast_name.into());
    run_data.insert(
        "scenario_file".into(),
        vast.execution.scenario_file.clone().into(),
    );
    let list: Vec<Value> = configs
        .iter()
        .map(|c| {
            let mut m = Mapping::new();
            m.insert("name".into(), c.name.clone().into());
            m.insert("config".into(), Value::Mapping(c.parameter_map()));
            Value::Mapping(m)
        })
        .collect();
    run_data.insert("configs".into(), Value::Sequence(list));
    run_data.insert(
        "_test_files".into(),
        Value::Sequence(
            test_files
                .iter()
                .map(|t| Value::String(t.clone()))
                .collect(),
        ),
    );
    run_data.insert("execution".into(), raw_execution(vast));
    run_data.insert("created_at".into(), created_at.into());
    run_data.insert("metadata".into(), Value::Mapping(vast.metadata.clone()));
    write(
        &out_dir.join("_config/configurations.yaml"),
        yaml("configurations.yaml", &run_data)?.as_bytes(),
        false,
    )?;

    let mut test_parts: Vec<&[u8]> = test_files.iter().map(|t| t.as_bytes()).collect();
    test_parts.extend(test_contents.iter().map(Vec::as_slice));
    for c in configs {
        let entry = vast.configuration.iter().find(|e| e.name == c.entry);
        let entry_yaml = entry
            .map(|e| yaml("configuration entry", &e.raw))
            .transpose()?
            .unwrap_or_default();
        let mut parts: Vec<&[u8]> = vec![entry_yaml.as_bytes(), &scenario];
        parts.extend(test_parts.iter().copied());
        let params_yaml = yaml("parameters", &c.parameter_map())?;
        let mut ids = Mapping::new();
        ids.insert("config_identifier".into(), hash12(&parts).into());
        ids.insert(
            "sub_identifier".into(),
            hash12(&[c.name.as_bytes(), params_yaml.as_bytes()]).into(),
        );
        let dir = out_dir.join(&c.name);
        write(
            &dir.join("config.yaml"),
            yaml("config.yaml", &ids)?.as_bytes(),
            false,
        )?;
        if let (false, Some(name)) = (c.parameters.is_empty(), &name) {
            let mut sc = Mapping::new();
            sc.insert(name.clone().into(), Value::Mapping(c.parameter_map()));
            write(
                &dir.join("scenario.config"),
                yaml("scenario.config", &sc)?.as_bytes(),
                false,
            )?;
        }
    }
    Ok(test_files)
}

/// `execution.yaml` written at the root of `out_template/` by `run` (not by `prepare-run`):
/// `execution_time` (UTC ISO), `runs`, `execution_type: cluster`, `image`, `run_as_user`, `env`
/// as a mapping and `cluster_info` (gathered by the caller from the cluster).
pub fn execution_yaml(
    vast: &VastFile,
    runs: u32,
    execution_time: &str,
    cluster_info: Value,
) -> Result<String, TemplateError> {
    let mut env = Mapping::new();
    for (k, v) in &vast.execution.env {
        env.insert(k.clone().into(), v.clone().into());
    }
    let mut m = Mapping::new();
    m.insert("execution_time".into(), execution_time.into());
    m.insert("runs".into(), Value::from(runs));
    m.insert("execution_type".into(), "cluster".into());
    m.insert("image".into(), vast.execution.image.clone().into());
    m.insert(
        "run_as_user".into(),
        Value::from(vast.execution.run_as_user),
    );
    m.insert("env".into(), Value::Mapping(env));
    m.insert("cluster_info".into(), cluster_info);
    yaml("execution.yaml", &m)
}

/// The `execution` section exactly as written in the file.
fn raw_execution(vast: &VastFile) -> Value {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&vast.text)
        .next()
        .and_then(|d| Value::deserialize(d).ok())
        .and_then(|v| v.get("execution").cloned())
        .unwrap_or(Value::Null)
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        let _ = p;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_have_their_blocks() {
        let c = entrypoint_script(Mode::Cluster);
        assert!(c.contains("trap vast_upload EXIT"));
        assert!(!c.contains("@@"));
        assert!(!c.contains("fixuid"));
        let l = entrypoint_script(Mode::Local);
        assert!(l.contains("fixuid"));
        assert!(!l.contains("vast_upload"));
        assert!(with_instance_type(&c, "INSTANCE_TYPE=$(uname -m)")
            .contains("INSTANCE_TYPE=$(uname -m)"));
        assert!(!secondary_entrypoint_script(Mode::Cluster).contains("@@"));
    }

    #[test]
    fn scenario_parameter_declarations() {
        let osc = "import osc.helpers\n\nscenario growth_sim:\n    growth_rate: float = 0.1\n    initial_population: int\n    var counter: int = 0\n    do serial:\n        wait elapsed(1s)\n        inner: float = 1\n\naction other:\n    x: int\n";
        let (name, params) = scenario_parameters(osc).unwrap();
        assert_eq!(name, "growth_sim");
        assert_eq!(params, ["growth_rate", "initial_population"]);
        assert_eq!(scenario_parameters("action a:\n  x: int\n"), None);
    }

    #[test]
    fn test_file_globs() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "files/a.sh",
            "files/b.py",
            "sub/files/c.sh",
            "sub/deep/files/d.txt",
            "top.sh",
            ".git/x.sh",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let mut v = VastFile::parse(
            &d.path().join("t.vast"),
            "version: 1\nexecution: {image: i:1, runs: 1, scenario_file: s.osc}\n",
        )
        .unwrap();
        let mut with = |f: &[&str]| {
            v.execution.test_files_filter = f.iter().map(|s| s.to_string()).collect();
            collect_test_files(&v).unwrap()
        };
        assert_eq!(with(&["files/*.sh"]), ["files/a.sh"]);
        assert_eq!(
            with(&["**/files/*"]),
            [
                "files/a.sh",
                "files/b.py",
                "sub/deep/files/d.txt",
                "sub/files/c.sh"
            ]
        );
        assert_eq!(with(&["*.sh"]), ["files/a.sh", "sub/files/c.sh", "top.sh"]);
        assert_eq!(with(&["/*.sh"]), ["top.sh"]);
        assert!(with(&[]).is_empty());
        // A pattern that matches nothing is an error naming it (hidden directories included).
        v.execution.test_files_filter = vec!["files/*.sh".into(), "files/*.yaml".into()];
        let e = collect_test_files(&v).unwrap_err().to_string();
        assert!(
            e.contains(
                "t.vast: execution.test_files_filter: pattern 'files/*.yaml' matches no file"
            ),
            "{e}"
        );
        v.execution.test_files_filter = vec!["/x.sh".into()];
        assert!(collect_test_files(&v).is_err(), ".git/x.sh is not shipped");
    }

    #[test]
    fn execution_yaml_fields() {
        let v = VastFile::parse(
            Path::new("x.vast"),
            "version: 1\nexecution: {image: i:1, runs: 3, scenario_file: s.osc, env: [{A: 1}]}\n",
        )
        .unwrap();
        let y = execution_yaml(&v, 5, "2026-01-02T03:04:05Z", Value::Null).unwrap();
        assert_eq!(y, "execution_time: 2026-01-02T03:04:05Z\nruns: 5\nexecution_type: cluster\nimage: i:1\nrun_as_user: 1000\nenv:\n  A: '1'\ncluster_info: null\n");
    }

    #[test]
    fn scenario_names() {
        assert_eq!(
            scenario_name("import osc.helpers\n\nscenario growth_sim:\n  do serial:\n").as_deref(),
            Some("growth_sim")
        );
        assert_eq!(scenario_name("action foo:\n"), None);
    }
}
