//! Parsing of the user's `.vast` file into typed values, with errors that name the file, the
//! line and the field.
//!
//! Only the first YAML document is read (as upstream). Top-level keys other than `version`,
//! `metadata`, `general`, `configuration`, `execution` and `analysis` are rejected, and so are
//! unknown keys inside `execution` and `configuration[]` entries (upstream silently ignores the
//! latter; a typo there would otherwise be lost). `execution.local` is accepted and ignored.
//!
//! `execution.retries` (0..=10, default [`DEFAULT_RETRIES`]) becomes each Job's `backoffLimit`.
//! The placement fields `node_selector`, `tolerations`, `priority_class` and `gpu` take the
//! same two forms as `resources` values ([`PerCluster`]): the plain value, used on every
//! cluster, or a per-cluster list of `{<context>: value}` entries resolved by `--context/-x`
//! (`project::resources`). For `tolerations` the plain value is itself a list: a list whose
//! entries are all single `<context>: [tolerations]` mappings is the per-cluster form.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// Environment variable names vast sets itself; `.vast` `execution.env` may not use them.
/// The first four are upstream's list; the rest are ours (the Jobs set them too;
/// `CONTAINER_NAME` names a secondary container's socket, and the `.vast` env follows it).
pub const RESERVED_ENV: &[&str] = &[
    "TEST_ID",
    "ROS_LOG_DIR",
    "PRE_COMMAND",
    "POST_COMMAND",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "S3_PREFIX",
    "AVAILABLE_CPUS",
    "AVAILABLE_MEM",
    "SCENARIO_EXECUTION_PARAMETERS",
    "CONTAINER_NAME",
];

/// A problem with a `.vast` file.
#[derive(Debug, thiserror::Error)]
pub enum VastError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `line` is 1-based; 0 when the position is unknown.
    #[error("{}{}: {field}: {message}", path.display(), fmt_line(*line))]
    Invalid {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
}

fn fmt_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

impl VastError {
    /// The field path the error is about (e.g. `execution.env`).
    pub fn field(&self) -> Option<&str> {
        match self {
            VastError::Invalid { field, .. } => Some(field),
            VastError::Read { .. } => None,
        }
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            VastError::Invalid { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }
}

/// A parsed `.vast` file.
#[derive(Debug, Clone)]
pub struct VastFile {
    /// The file as given (used in messages).
    pub path: PathBuf,
    /// Directory of the file: every relative path in it is relative to this.
    pub dir: PathBuf,
    /// Raw text (hashing, line lookup).
    pub text: String,
    pub metadata: Mapping,
    pub general: Value,
    pub configuration: Vec<ConfigEntry>,
    pub execution: Execution,
    pub analysis: Value,
}

/// One `configuration[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    pub name: String,
    /// Fixed parameters, in file order.
    pub parameters: Vec<(String, Value)>,
    /// `{<VariationType>: {...}}` in file order.
    pub variations: Vec<(String, Value)>,
    /// The entry as written (hashed into `config_identifier`).
    pub raw: Value,
}

/// A resource value: a scalar used on every cluster, or a per-cluster list `[{ctx: value}]`.
pub type ResourceValue = PerCluster<String>;

/// A value given once for every cluster, or per cluster as `[{<context>: value}, …]`
/// (resources, placement).
#[derive(Debug, Clone, PartialEq)]
pub enum PerCluster<T> {
    Scalar(T),
    PerCluster(Vec<(String, T)>),
}

/// One Kubernetes toleration (`execution.tolerations`); validated: `operator` is `Equal` or
/// `Exists`, `effect` is `NoSchedule`, `PreferNoSchedule` or `NoExecute`, `Exists` takes no
/// `value`, an empty `key` needs `Exists`, `tolerationSeconds` needs `NoExecute`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub value: Option<String>,
    pub effect: Option<String>,
    pub toleration_seconds: Option<i64>,
}

/// Where the Jobs' pods run: `execution.node_selector`, `tolerations`, `priority_class`, `gpu`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub node_selector: Option<PerCluster<BTreeMap<String, String>>>,
    pub tolerations: Option<PerCluster<Vec<Toleration>>>,
    pub priority_class: Option<PerCluster<String>>,
    /// `nvidia.com/gpu` of the main container (0 = none).
    pub gpu: Option<PerCluster<u32>>,
}

/// `execution.retries` when not given.
pub const DEFAULT_RETRIES: u32 = 2;
/// The largest `execution.retries` accepted.
pub const MAX_RETRIES: u32 = 10;

/// `resources: {cpu, memory}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub cpu: Option<ResourceValue>,
    pub memory: Option<ResourceValue>,
}

/// One `secondary_containers` entry, in any of the documented forms.
#[derive(Debug, Clone, PartialEq)]
pub struct SecondaryContainer {
    pub name: String,
    pub resources: Resources,
}

/// The `execution` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub image: String,
    pub runs: u32,
    pub scenario_file: String,
    pub resources: Resources,
    pub secondary_containers: Vec<SecondaryContainer>,
    /// In file order; values stringified.
    pub env: Vec<(String, String)>,
    pub timeout: Option<u64>,
    /// Pod retries of a Job after an infrastructure failure (the Job's `backoffLimit`).
    pub retries: u32,
    pub placement: Placement,
    pub run_as_user: i64,
    pub pre_command: Option<String>,
    pub post_command: Option<String>,
    pub test_files_filter: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Value,
    #[serde(default)]
    metadata: Option<Mapping>,
    #[serde(default)]
    general: Option<Value>,
    #[serde(default)]
    configuration: Option<Vec<RawEntry>>,
    execution: Option<RawExecution>,
    #[serde(default)]
    analysis: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    #[serde(default)]
    parameters: Option<Vec<Mapping>>,
    #[serde(default)]
    variations: Option<Vec<Mapping>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExecution {
    image: Option<String>,
    runs: Option<i64>,
    scenario_file: Option<String>,
    #[serde(default)]
    resources: Option<Mapping>,
    #[serde(default)]
    secondary_containers: Option<Vec<Value>>,
    #[serde(default)]
    env: Option<Vec<Mapping>>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    retries: Option<i64>,
    #[serde(default)]
    node_selector: Option<Value>,
    #[serde(default)]
    tolerations: Option<Value>,
    #[serde(default)]
    priority_class: Option<Value>,
    #[serde(default)]
    gpu: Option<Value>,
    #[serde(default)]
    run_as_user: Option<i64>,
    #[serde(default)]
    pre_command: Option<String>,
    #[serde(default)]
    post_command: Option<String>,
    #[serde(default)]
    test_files_filter: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    local: Option<Value>,
}

impl VastFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<VastFile, VastError> {
        let text = std::fs::read_to_string(path).map_err(|source| VastError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the content of `path` (nothing is read from disk).
    pub fn parse(path: &Path, text: &str) -> Result<VastFile, VastError> {
        let p = Parser { path, text };
        // Only the first document counts.
        let first = serde_yaml::Deserializer::from_str(text).next();
        let Some(doc) = first else {
            return Err(p.err(
                &[],
                "the file is empty; expected a mapping with `version: 1`",
            ));
        };
        let raw = RawFile::deserialize(doc).map_err(|e| p.yaml_error(e))?;
        match &raw.version {
            Value::Number(n) if n.as_u64() == Some(1) => {}
            other => {
                return Err(p.err(
                    &["version"],
                    &format!("unsupported version {}; expected 1", short(other)),
                ))
            }
        }
        let Some(exec) = raw.execution else {
            return Err(p.err(&[], "missing required section `execution`"));
        };
        let execution = p.execution(exec)?;
        let mut configuration = Vec::new();
        let mut names = BTreeSet::new();
        for (i, e) in raw
            .configuration
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let entry = p.entry(i, e)?;
            if !names.insert(entry.name.clone()) {
                return Err(p.err_at(
                    p.find_value("name", &entry.name),
                    &format!("configuration[{i}].name"),
                    &format!("duplicate configuration name '{}'", entry.name),
                ));
            }
            configuration.push(entry);
        }
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(VastFile {
            path: path.to_path_buf(),
            dir,
            text: text.to_string(),
            metadata: raw.metadata.unwrap_or_default(),
            general: raw.general.unwrap_or(Value::Null),
            configuration,
            execution,
            analysis: raw.analysis.unwrap_or(Value::Null),
        })
    }

    /// Path of the scenario file (relative paths resolved against the `.vast` directory).
    pub fn scenario_path(&self) -> PathBuf {
        self.dir.join(&self.execution.scenario_file)
    }
}

struct Parser<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Parser<'_> {
    fn err(&self, keys: &[&str], message: &str) -> VastError {
        let field = if keys.is_empty() {
            "<top>".to_string()
        } else {
            keys.join(".")
        };
        self.err_at(find_line(self.text, keys), &field, message)
    }

    fn err_at(&self, line: usize, field: &str, message: &str) -> VastError {
        VastError::Invalid {
            path: self.path.to_path_buf(),
            line,
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    /// Line of the first `key: value` line whose value is `value` (for list entries).
    fn find_value(&self, key: &str, value: &str) -> usize {
        for (i, l) in self.text.lines().enumerate() {
            let t = l.trim_start().trim_start_matches("- ").trim();
            if let Some(rest) = t.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                if rest.trim().trim_matches(['"', '\'']) == value {
                    return i + 1;
                }
            }
        }
        0
    }

    fn yaml_error(&self, e: serde_yaml::Error) -> VastError {
        let line = e.location().map(|l| l.line()).unwrap_or(0);
        let msg = e.to_string();
        // serde_yaml formats "path.to.field: message at line L column C".
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        let (field, message) = match msg.split_once(": ") {
            Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
            _ => ("<top>".to_string(), msg.clone()),
        };
        let message = message.replace("unknown field", "unknown key");
        VastError::Invalid {
            path: self.path.to_path_buf(),
            line,
            field,
            message,
        }
    }

    fn entry(&self, i: usize, e: RawEntry) -> Result<ConfigEntry, VastError> {
        let field = format!("configuration[{i}].name");
        let line = self.find_value("name", &e.name);
        if let Err(why) = check_config_name(&e.name) {
            return Err(self.err_at(line, &field, &format!("invalid name '{}': {why}", e.name)));
        }
        let mut parameters = Vec::new();
        for (j, m) in e
            .parameters
            .clone()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let (k, v) = single_key(&m).ok_or_else(|| {
                self.err_at(
                    line,
                    &format!("configuration[{i}].parameters[{j}]"),
                    "each parameter must be a single `name: value` mapping",
                )
            })?;
            if parameters.iter().any(|(n, _)| n == &k) {
                return Err(self.err_at(
                    line,
                    &format!("configuration[{i}].parameters[{j}]"),
                    &format!("parameter '{k}' is given twice"),
                ));
            }
            parameters.push((k, v));
        }
        let mut variations = Vec::new();
        for (j, m) in e
            .variations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let (k, v) = single_key(&m).ok_or_else(|| {
                self.err_at(
                    line,
                    &format!("configuration[{i}].variations[{j}]"),
                    "each variation must be a single `<VariationType>: {...}` mapping",
                )
            })?;
            variations.push((k, v));
        }
        let mut raw = Mapping::new();
        raw.insert("name".into(), Value::String(e.name.clone()));
        if let Some(p) = e.parameters {
            raw.insert(
                "parameters".into(),
                Value::Sequence(p.into_iter().map(Value::Mapping).collect()),
            );
        }
        if let Some(v) = e.variations {
            raw.insert(
                "variations".into(),
                Value::Sequence(v.into_iter().map(Value::Mapping).collect()),
            );
        }
        Ok(ConfigEntry {
            name: e.name,
            parameters,
            variations,
            raw: Value::Mapping(raw),
        })
    }

    fn execution(&self, e: RawExecution) -> Result<Execution, VastError> {
        fn ex(k: &str) -> Vec<&str> {
            vec!["execution", k]
        }
        let image = e
            .image
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| self.err(&["execution"], "missing required field `image`"))?;
        let runs = match e.runs {
            None => return Err(self.err(&["execution"], "missing required field `runs`")),
            Some(r) if r < 1 || r > u32::MAX as i64 => {
                return Err(self.err(&ex("runs"), &format!("must be a positive integer, got {r}")))
            }
            Some(r) => r as u32,
        };
        let scenario_file = e
            .scenario_file
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| self.err(&["execution"], "missing required field `scenario_file`"))?;
        let resources = match &e.resources {
            None => Resources::default(),
            Some(m) => self.resources(m, &["execution", "resources"])?,
        };
        let mut secondary_containers: Vec<SecondaryContainer> = Vec::new();
        for (i, v) in e
            .secondary_containers
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let c = self.secondary(i, v)?;
            if c.name == "robovast" || c.name == "s3-init" {
                return Err(self.err(
                    &ex("secondary_containers"),
                    &format!("container name '{}' is reserved by vast", c.name),
                ));
            }
            if secondary_containers.iter().any(|o| o.name == c.name) {
                return Err(self.err(
                    &ex("secondary_containers"),
                    &format!("container '{}' is listed twice", c.name),
                ));
            }
            secondary_containers.push(c);
        }
        let mut env = Vec::new();
        let mut reserved = Vec::new();
        for (i, m) in e.env.unwrap_or_default().iter().enumerate() {
            let (k, v) = single_key(m).ok_or_else(|| {
                self.err(
                    &ex("env"),
                    &format!("entry {i} must be a single `NAME: value` mapping"),
                )
            })?;
            if !valid_env_name(&k) {
                return Err(self.err(
                    &ex("env"),
                    &format!("invalid environment variable name '{k}'"),
                ));
            }
            if RESERVED_ENV.contains(&k.as_str()) {
                reserved.push(k.clone());
            }
            let value = scalar_string(&v).ok_or_else(|| {
                self.err(
                    &ex("env"),
                    &format!("value of '{k}' must be a string, number or boolean"),
                )
            })?;
            env.push((k, value));
        }
        if !reserved.is_empty() {
            return Err(self.err(
                &ex("env"),
                &format!(
                    "execution.env contains reserved environment variable names: {}",
                    reserved.join(", ")
                ),
            ));
        }
        if e.timeout == Some(0) {
            return Err(self.err(&ex("timeout"), "must be a positive number of seconds"));
        }
        let retries = match e.retries {
            None => DEFAULT_RETRIES,
            Some(r) if (0..=MAX_RETRIES as i64).contains(&r) => r as u32,
            Some(r) => {
                return Err(self.err(
                    &ex("retries"),
                    &format!("must be an integer from 0 to {MAX_RETRIES}, got {r}"),
                ))
            }
        };
        let placement = Placement {
            node_selector: self.per_cluster(
                e.node_selector.as_ref(),
                "node_selector",
                |v, at| self.node_selector(v, at),
            )?,
            tolerations: self.tolerations(e.tolerations.as_ref())?,
            priority_class: self.per_cluster(
                e.priority_class.as_ref(),
                "priority_class",
                |v, at| self.priority_class(v, at),
            )?,
            gpu: self.per_cluster(e.gpu.as_ref(), "gpu", |v, at| self.gpu(v, at))?,
        };
        let filters = e.test_files_filter.unwrap_or_default();
        for f in &filters {
            if let Err(err) = globset::Glob::new(f) {
                return Err(self.err(
                    &ex("test_files_filter"),
                    &format!("invalid glob '{f}': {err}"),
                ));
            }
        }
        for (k, v) in [
            ("pre_command", &e.pre_command),
            ("post_command", &e.post_command),
        ] {
            if let Some(c) = v {
                if !c.starts_with('/') {
                    return Err(self.err(
                        &ex(k),
                        &format!("must be an absolute path inside the container (e.g. /config/files/x.sh), got '{c}'"),
                    ));
                }
            }
        }
        Ok(Execution {
            image,
            runs,
            scenario_file,
            resources,
            secondary_containers,
            env,
            timeout: e.timeout,
            retries,
            placement,
            run_as_user: e.run_as_user.unwrap_or(1000),
            pre_command: e.pre_command,
            post_command: e.post_command,
            test_files_filter: filters,
        })
    }

    fn resources(&self, m: &Mapping, at: &[&str]) -> Result<Resources, VastError> {
        let mut r = Resources::default();
        for (k, v) in m {
            let key = k.as_str().unwrap_or_default();
            let mut path = at.to_vec();
            path.push(key);
            match key {
                "cpu" => r.cpu = self.resource_value(v, &path, true)?,
                "memory" => r.memory = self.resource_value(v, &path, false)?,
                // Upstream accepts `gpu` and never uses it on a cluster.
                "gpu" => {}
                other => {
                    return Err(self.err(
                        at,
                        &format!("unknown key `{other}`, expected one of `cpu`, `memory`, `gpu`"),
                    ))
                }
            }
        }
        Ok(r)
    }

    fn resource_value(
        &self,
        v: &Value,
        at: &[&str],
        cpu: bool,
    ) -> Result<Option<ResourceValue>, VastError> {
        let check = |s: &str| -> Result<String, VastError> {
            if valid_quantity(s, cpu) {
                Ok(s.to_string())
            } else {
                Err(self.err(
                    at,
                    &format!(
                        "invalid {} quantity '{s}'",
                        if cpu { "cpu" } else { "memory" }
                    ),
                ))
            }
        };
        match v {
            Value::Null => Ok(None),
            Value::Sequence(items) if items.is_empty() => Ok(None),
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for item in items {
                    let Value::Mapping(m) = item else {
                        return Err(self.err(
                            at,
                            "per-cluster list entries must be `<context>: <value>` mappings",
                        ));
                    };
                    let Some((ctx, val)) = single_key(m) else {
                        return Err(self.err(
                            at,
                            "per-cluster list entries must be single `<context>: <value>` mappings",
                        ));
                    };
                    let s = scalar_string(&val).ok_or_else(|| {
                        self.err(at, &format!("value for context '{ctx}' must be a scalar"))
                    })?;
                    out.push((ctx, check(&s)?));
                }
                Ok(Some(ResourceValue::PerCluster(out)))
            }
            other => {
                let s = scalar_string(other).ok_or_else(|| {
                    self.err(
                        at,
                        "must be a scalar or a per-cluster list of `<context>: <value>`",
                    )
                })?;
                Ok(Some(ResourceValue::Scalar(check(&s)?)))
            }
        }
    }

    /// A placement field in the two forms of [`PerCluster`]: a list of single-key mappings is
    /// per-cluster (an empty list or null is "not set"), anything else is the plain value.
    /// `parse` checks one value; `ctx` names the context in its messages.
    fn per_cluster<T>(
        &self,
        v: Option<&Value>,
        key: &str,
        parse: impl Fn(&Value, &str) -> Result<T, String>,
    ) -> Result<Option<PerCluster<T>>, VastError> {
        let at = ["execution", key];
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Sequence(items)) if items.is_empty() => Ok(None),
            Some(Value::Sequence(items)) => {
                let mut out = Vec::new();
                for item in items {
                    let Some((ctx, val)) = item.as_mapping().and_then(single_key) else {
                        return Err(self.err(
                            &at,
                            "per-cluster list entries must be single `<context>: <value>` mappings",
                        ));
                    };
                    let parsed = parse(&val, &format!("value for context '{ctx}'"))
                        .map_err(|m| self.err(&at, &m))?;
                    out.push((ctx, parsed));
                }
                Ok(Some(PerCluster::PerCluster(out)))
            }
            Some(other) => parse(other, "value")
                .map(|x| Some(PerCluster::Scalar(x)))
                .map_err(|m| self.err(&at, &m)),
        }
    }

    fn node_selector(&self, v: &Value, what: &str) -> Result<BTreeMap<String, String>, String> {
        let Value::Mapping(m) = v else {
            return Err(format!(
                "{what} must be a mapping of node label to value (or a per-cluster list of `<context>: {{label: value}}`)"
            ));
        };
        let mut out = BTreeMap::new();
        for (k, val) in m {
            let Some(k) = k.as_str() else {
                return Err(format!("{what}: label names must be strings"));
            };
            if let Err(why) = check_label_key(k) {
                return Err(format!("{what}: invalid node label '{k}': {why}"));
            }
            let Some(s) = scalar_string(val) else {
                return Err(format!("{what}: the value of '{k}' must be a string"));
            };
            if !valid_label_value(&s) {
                return Err(format!("{what}: invalid value '{s}' of node label '{k}': at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"));
            }
            out.insert(k.to_string(), s);
        }
        Ok(out)
    }

    fn priority_class(&self, v: &Value, what: &str) -> Result<String, String> {
        match v {
            Value::String(s) if is_dns_subdomain(s) => Ok(s.clone()),
            Value::String(s) => Err(format!("{what}: invalid PriorityClass name '{s}': lowercase letters, digits, '-' and '.', at most 253")),
            other => Err(format!("{what} must be a PriorityClass name, got {}", short(other))),
        }
    }

    fn gpu(&self, v: &Value, what: &str) -> Result<u32, String> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    format!("{what} must be a non-negative integer (GPUs per Job), got {n}")
                }),
            other => Err(format!(
                "{what} must be a non-negative integer (GPUs per Job), got {}",
                short(other)
            )),
        }
    }

    /// `tolerations`: a list of tolerations, or a per-cluster list of `<context>: [...]`
    /// (every entry a single-key mapping whose value is a list).
    fn tolerations(
        &self,
        v: Option<&Value>,
    ) -> Result<Option<PerCluster<Vec<Toleration>>>, VastError> {
        let at = ["execution", "tolerations"];
        let Some(Value::Sequence(items)) = v else {
            return match v {
                None | Some(Value::Null) => Ok(None),
                Some(_) => Err(self.err(
                    &at,
                    "must be a list of tolerations or a per-cluster list of `<context>: [tolerations]`",
                )),
            };
        };
        let per_cluster_entry = |i: &Value| {
            i.as_mapping()
                .and_then(single_key)
                .is_some_and(|(_, v)| v.is_sequence())
        };
        let n = items.iter().filter(|i| per_cluster_entry(i)).count();
        if n > 0 && n < items.len() {
            return Err(self.err(
                &at,
                "mixes `<context>: [tolerations]` entries with plain tolerations; use one form",
            ));
        }
        if n == 0 {
            if items.is_empty() {
                return Ok(None);
            }
            return self
                .toleration_list(items, "")
                .map(|l| Some(PerCluster::Scalar(l)))
                .map_err(|m| self.err(&at, &m));
        }
        self.per_cluster(v, "tolerations", |val, what| match val {
            Value::Sequence(l) => self.toleration_list(l, &format!("{what}: ")),
            _ => Err(format!("{what} must be a list of tolerations")),
        })
    }

    fn toleration_list(&self, items: &[Value], what: &str) -> Result<Vec<Toleration>, String> {
        items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.toleration(t)
                    .map_err(|m| format!("{what}toleration {i}: {m}"))
            })
            .collect()
    }

    fn toleration(&self, v: &Value) -> Result<Toleration, String> {
        let Value::Mapping(m) = v else {
            return Err(
                "must be a mapping with `key`, `operator`, `value`, `effect`, `tolerationSeconds`"
                    .into(),
            );
        };
        let mut t = Toleration::default();
        for (k, val) in m {
            let k = k.as_str().unwrap_or_default();
            // `value: true` is the string "true" (as Kubernetes needs it); other fields are text.
            let text = || match val {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(_) | Value::Number(_) if k == "value" => Ok(short(val)),
                _ => Err(format!("`{k}` must be a string, got {}", short(val))),
            };
            match k {
                "key" => t.key = Some(text()?),
                "value" => t.value = Some(text()?),
                "operator" => {
                    let o = text()?;
                    if o != "Equal" && o != "Exists" {
                        return Err(format!("invalid operator '{o}'; expected `Equal` or `Exists`"));
                    }
                    t.operator = Some(o);
                }
                "effect" => {
                    let e = text()?;
                    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e.as_str()) {
                        return Err(format!(
                            "invalid effect '{e}'; expected `NoSchedule`, `PreferNoSchedule` or `NoExecute`"
                        ));
                    }
                    t.effect = Some(e);
                }
                "tolerationSeconds" => {
                    t.toleration_seconds = Some(val.as_i64().ok_or_else(|| {
                        format!("`tolerationSeconds` must be an integer, got {}", short(val))
                    })?)
                }
                other => {
                    return Err(format!(
                        "unknown key `{other}`, expected `key`, `operator`, `value`, `effect` or `tolerationSeconds`"
                    ))
                }
            }
        }
        let exists = t.operator.as_deref() == Some("Exists");
        if exists && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err("`value` must be empty when `operator` is `Exists`".into());
        }
        if t.key.as_deref().unwrap_or_default().is_empty() && !exists {
            return Err("a toleration without `key` needs `operator: Exists`".into());
        }
        if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
            check_label_key(k).map_err(|why| format!("invalid key '{k}': {why}"))?;
        }
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            return Err("`tolerationSeconds` needs `effect: NoExecute`".into());
        }
        Ok(t)
    }

    fn secondary(&self, i: usize, v: &Value) -> Result<SecondaryContainer, VastError> {
        let at = ["execution", "secondary_containers"];
        let bad = |msg: &str| self.err(&at, &format!("entry {i}: {msg}"));
        let (name, resources) = match v {
            // `- nav`
            Value::String(s) => (s.clone(), Resources::default()),
            Value::Mapping(m) => {
                // Sibling form `{nav: null, resources: {...}}` or nested `{nav: {resources: {...}}}`.
                let mut name = None;
                let mut sibling = None;
                for (k, val) in m {
                    let k = k.as_str().ok_or_else(|| bad("keys must be strings"))?;
                    if k == "resources" && m.len() > 1 {
                        sibling = Some(val.clone());
                    } else if name.is_none() {
                        name = Some((k.to_string(), val.clone()));
                    } else {
                        return Err(bad("expected one container name per entry"));
                    }
                }
                let Some((name, body)) = name else {
                    return Err(bad("missing the container name"));
                };
                let res_value = match (&body, sibling) {
                    (Value::Null, s) => s,
                    (Value::Mapping(b), None) => {
                        for k in b.keys() {
                            if k.as_str() != Some("resources") {
                                return Err(bad(&format!(
                                    "container '{name}': unknown key `{}`, expected `resources`",
                                    short(k)
                                )));
                            }
                        }
                        b.get("resources").cloned()
                    }
                    _ => {
                        return Err(bad(&format!(
                            "container '{name}': expected `resources:` or nothing"
                        )))
                    }
                };
                let resources = match res_value {
                    None | Some(Value::Null) => Resources::default(),
                    Some(Value::Mapping(rm)) => self.resources(
                        &rm,
                        &["execution", "secondary_containers", &name, "resources"],
                    )?,
                    Some(_) => {
                        return Err(bad(&format!(
                            "container '{name}': `resources` must be a mapping"
                        )))
                    }
                };
                (name, resources)
            }
            _ => {
                return Err(bad(
                    "expected a container name or `<name>: {resources: ...}`",
                ))
            }
        };
        if !is_dns_label(&name) {
            return Err(bad(&format!(
                "container name '{name}' must be lowercase letters, digits and '-' (at most 63)"
            )));
        }
        Ok(SecondaryContainer { name, resources })
    }
}

/// Upstream rule (lowercase, no `_`, space or `.`) tightened to what Kubernetes names accept.
fn check_config_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("must be all lowercase");
    }
    if name.contains(['_', ' ', '.']) {
        return Err("must not contain '_', spaces or '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    if name.len() > 200 {
        return Err("must be at most 200 characters");
    }
    Ok(())
}

/// A DNS-1123 label: 1–63 lowercase letters, digits and '-', not starting or ending with '-'
/// (node label values' names, namespaces, Job names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (PriorityClass names): dot-separated DNS labels, at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label name part or value: at most 63 of alnum, `-`, `_`, `.`, alnum at both ends.
fn valid_label_value(s: &str) -> bool {
    s.is_empty() || valid_label_name(s)
}

fn valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A Kubernetes label key: `[<DNS subdomain prefix>/]<name>`.
fn check_label_key(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return Err("the prefix before '/' must be a DNS subdomain (e.g. cloud.google.com)");
    }
    if !valid_label_name(name) {
        return Err("the name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit");
    }
    Ok(())
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A Kubernetes quantity: cpu as a number or millicores (`2`, `0.5`, `500m`); memory as a
/// number with an optional binary/decimal suffix (`8Gi`, `512M`, `1073741824`).
pub(crate) fn valid_quantity(s: &str, cpu: bool) -> bool {
    let suffixes: &[&str] = if cpu {
        &["m", ""]
    } else {
        &[
            "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "",
        ]
    };
    for suf in suffixes {
        if let Some(num) = s.strip_suffix(suf) {
            if !num.is_empty()
                && num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && num.bytes().filter(|b| *b == b'.').count() <= 1
                && num.parse::<f64>().map(|f| f > 0.0).unwrap_or(false)
            {
                return true;
            }
        }
    }
    false
}

fn single_key(m: &Mapping) -> Option<(String, Value)> {
    if m.len() != 1 {
        return None;
    }
    let (k, v) = m.iter().next()?;
    Some((k.as_str()?.to_string(), v.clone()))
}

/// A YAML scalar as a string (booleans lowercase, as written in YAML).
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        other => scalar_string(other).unwrap_or_else(|| "<non-scalar>".into()),
    }
}

/// Line (1-based) of the nested key path in block-style YAML; 0 when not found.
/// Goes down key by key, each deeper than the previous one; stops at the deepest found.
pub fn find_line(text: &str, keys: &[&str]) -> usize {
    let mut found = 0usize;
    let mut start = 0usize;
    let mut min_indent: isize = -1;
    for key in keys {
        let mut hit = None;
        for (i, l) in text.lines().enumerate().skip(start) {
            let indent = (l.len() - l.trim_start().len()) as isize;
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if found > 0 && indent <= min_indent && !t.starts_with("- ") {
                break;
            }
            let t = t.trim_start_matches("- ");
            if t.strip_prefix(key).is_some_and(|r| r.starts_with(':')) {
                hit = Some((i, indent));
                break;
            }
        }
        match hit {
            Some((i, indent)) => {
                found = i + 1;
                start = i + 1;
                min_indent = indent;
            }
            None => break,
        }
    }
    found
}

impl fmt::Display for ResourceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceValue::Scalar(s) => f.write_str(s),
            ResourceValue::PerCluster(l) => {
                let keys: Vec<_> = l.iter().map(|(k, _)| format!("'{k}'")).collect();
                write!(f, "[{}]", keys.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "version: 1\nexecution:\n  image: i:1\n  runs: 2\n  scenario_file: scenario.osc\n";

    #[test]
    fn only_the_first_document_counts() {
        let text = format!("{MIN}---\nthis: is ignored\n");
        let v = VastFile::parse(Path::new("d/x.vast"), &text).unwrap();
        assert_eq!(v.execution.runs, 2);
        assert_eq!(v.execution.run_as_user, 1000);
        assert_eq!(v.dir, Path::new("d"));
        assert_eq!(
            VastFile::parse(Path::new("x.vast"), MIN).unwrap().dir,
            Path::new(".")
        );
    }

    #[test]
    fn errors_expose_field_and_line() {
        let text = MIN.replace("  runs: 2\n", "  runs: 2\n  timeout: 0\n");
        let e = VastFile::parse(Path::new("x.vast"), &text).unwrap_err();
        assert_eq!(e.field(), Some("execution.timeout"));
        assert_eq!(e.line(), Some(5));
        assert_eq!(
            e.to_string(),
            "x.vast:5: execution.timeout: must be a positive number of seconds"
        );
        let e = VastFile::load(Path::new("/nonexistent/x.vast")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("cannot read /nonexistent/x.vast:"));
        assert_eq!((e.field(), e.line()), (None, None));
    }

    fn err(extra: &str) -> String {
        VastFile::parse(Path::new("x.vast"), &format!("{MIN}{extra}"))
            .unwrap_err()
            .to_string()
    }

    fn exec(extra: &str) -> Execution {
        VastFile::parse(Path::new("x.vast"), &format!("{MIN}{extra}"))
            .unwrap()
            .execution
    }

    #[test]
    fn retries_default_bounds_and_errors() {
        assert_eq!(exec("").retries, DEFAULT_RETRIES);
        assert_eq!(exec("  retries: 0\n").retries, 0);
        assert_eq!(exec("  retries: 10\n").retries, 10);
        assert_eq!(
            err("  retries: 11\n"),
            "x.vast:6: execution.retries: must be an integer from 0 to 10, got 11"
        );
        assert_eq!(
            err("  retries: -1\n"),
            "x.vast:6: execution.retries: must be an integer from 0 to 10, got -1"
        );
        let e = err("  retries: two\n");
        assert!(
            e.starts_with("x.vast:6: execution.retries: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn placement_forms() {
        let e = exec("  node_selector: {pool: sim, cloud.google.com/gke-spot: true}\n  tolerations:\n    - operator: Exists\n    - {key: k, operator: Equal, value: 1, effect: NoExecute, tolerationSeconds: 30}\n  priority_class: campaign.low\n  gpu: 0\n");
        let p = &e.placement;
        assert_eq!(
            p.node_selector,
            Some(PerCluster::Scalar(
                [
                    ("cloud.google.com/gke-spot".to_string(), "true".to_string()),
                    ("pool".into(), "sim".into())
                ]
                .into()
            ))
        );
        let Some(PerCluster::Scalar(t)) = &p.tolerations else {
            panic!("{p:?}")
        };
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].operator.as_deref(), Some("Exists"));
        assert_eq!(
            (t[1].value.as_deref(), t[1].toleration_seconds),
            (Some("1"), Some(30))
        );
        assert_eq!(
            p.priority_class,
            Some(PerCluster::Scalar("campaign.low".into()))
        );
        assert_eq!(p.gpu, Some(PerCluster::Scalar(0)));

        let e = exec("  node_selector:\n    - gke: {pool: spot}\n    - local: {}\n  tolerations:\n    - gke: [{key: a, operator: Exists}]\n    - local: []\n  priority_class: [{gke: high}]\n  gpu: [{gke: 1}, {local: 0}]\n");
        let p = &e.placement;
        assert_eq!(
            p.node_selector,
            Some(PerCluster::PerCluster(vec![
                (
                    "gke".into(),
                    [("pool".to_string(), "spot".to_string())].into()
                ),
                ("local".into(), BTreeMap::new()),
            ]))
        );
        let Some(PerCluster::PerCluster(t)) = &p.tolerations else {
            panic!("{p:?}")
        };
        assert_eq!((t[0].0.as_str(), t[0].1.len(), t[1].1.len()), ("gke", 1, 0));
        assert_eq!(
            p.gpu,
            Some(PerCluster::PerCluster(vec![
                ("gke".into(), 1),
                ("local".into(), 0)
            ]))
        );
        // Not set: absent, null, an empty list.
        let e = exec("  node_selector:\n  tolerations: []\n  gpu: []\n");
        assert_eq!(e.placement, Placement::default());
    }

    #[test]
    fn placement_errors_name_file_line_and_field() {
        let cases: &[(&str, &str)] = &[
            ("  node_selector: pool\n", "x.vast:6: execution.node_selector: value must be a mapping of node label to value (or a per-cluster list of `<context>: {label: value}`)"),
            ("  node_selector: {\"bad key!\": x}\n", "x.vast:6: execution.node_selector: value: invalid node label 'bad key!': the name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            ("  node_selector: {pool: \"a b\"}\n", "x.vast:6: execution.node_selector: value: invalid value 'a b' of node label 'pool': at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            ("  node_selector:\n    - gke: pool\n", "x.vast:6: execution.node_selector: value for context 'gke' must be a mapping of node label to value (or a per-cluster list of `<context>: {label: value}`)"),
            ("  node_selector:\n    - {gke: {a: b}, local: {a: c}}\n", "x.vast:6: execution.node_selector: per-cluster list entries must be single `<context>: <value>` mappings"),
            ("  tolerations:\n    - {key: a, operator: In}\n", "x.vast:6: execution.tolerations: toleration 0: invalid operator 'In'; expected `Equal` or `Exists`"),
            ("  tolerations:\n    - {key: a, effect: NoRun}\n", "x.vast:6: execution.tolerations: toleration 0: invalid effect 'NoRun'; expected `NoSchedule`, `PreferNoSchedule` or `NoExecute`"),
            ("  tolerations:\n    - gke:\n        - {key: a, operator: Exists, value: x}\n", "x.vast:6: execution.tolerations: value for context 'gke': toleration 0: `value` must be empty when `operator` is `Exists`"),
            ("  tolerations:\n    - {value: x}\n", "x.vast:6: execution.tolerations: toleration 0: a toleration without `key` needs `operator: Exists`"),
            ("  tolerations:\n    - {key: a, tolerationSeconds: 5}\n", "x.vast:6: execution.tolerations: toleration 0: `tolerationSeconds` needs `effect: NoExecute`"),
            ("  tolerations:\n    - {key: a, operator: Exists}\n    - {key: b, op: Exists}\n", "x.vast:6: execution.tolerations: toleration 1: unknown key `op`, expected `key`, `operator`, `value`, `effect` or `tolerationSeconds`"),
            ("  tolerations:\n    - gke: [{key: a, operator: Exists}]\n    - {key: b, operator: Exists}\n", "x.vast:6: execution.tolerations: mixes `<context>: [tolerations]` entries with plain tolerations; use one form"),
            ("  tolerations: {key: a}\n", "x.vast:6: execution.tolerations: must be a list of tolerations or a per-cluster list of `<context>: [tolerations]`"),
            ("  tolerations:\n    - {key: 3, operator: Exists}\n", "x.vast:6: execution.tolerations: toleration 0: `key` must be a string, got 3"),
            ("  priority_class: Low_Priority\n", "x.vast:6: execution.priority_class: value: invalid PriorityClass name 'Low_Priority': lowercase letters, digits, '-' and '.', at most 253"),
            ("  priority_class: 3\n", "x.vast:6: execution.priority_class: value must be a PriorityClass name, got 3"),
            ("  gpu: -1\n", "x.vast:6: execution.gpu: value must be a non-negative integer (GPUs per Job), got -1"),
            ("  gpu: 1.5\n", "x.vast:6: execution.gpu: value must be a non-negative integer (GPUs per Job), got 1.5"),
            ("  gpu: [{gke: two}]\n", "x.vast:6: execution.gpu: value for context 'gke' must be a non-negative integer (GPUs per Job), got two"),
            ("  gpu: [gke]\n", "x.vast:6: execution.gpu: per-cluster list entries must be single `<context>: <value>` mappings"),
        ];
        for (extra, want) in cases {
            assert_eq!(&err(extra), want, "{extra}");
        }
    }

    #[test]
    fn quantities_and_find_line() {
        assert!(
            valid_quantity("500m", true)
                && valid_quantity("1.5", true)
                && !valid_quantity("1Gi", true)
        );
        assert!(
            valid_quantity("8Gi", false)
                && valid_quantity("1073741824", false)
                && !valid_quantity("-1", false)
        );
        let t = "a:\n  b:\n    c: 1\nd:\n  c: 2\n";
        assert_eq!(find_line(t, &["d", "c"]), 5);
        assert_eq!(find_line(t, &["a", "b", "c"]), 3);
        assert_eq!(find_line(t, &["zz"]), 0);
    }
}
