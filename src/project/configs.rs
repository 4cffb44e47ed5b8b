//! Configuration generation: the `configuration[]` entries of a `.vast` file expanded through
//! their variations into named scenario configurations.
//!
//! Naming (as upstream): every variation step renames each child `<parent>-<i>`, `i` from 1
//! per parent, so two chained lists of 4 and 3 values on `test` give `test-1-1` … `test-4-3`;
//! an entry without variations keeps its name.
//!
//! Random variations are reproducible: each variation draws from its own SplitMix64 generator
//! seeded with its `seed` (0 when `ParameterVariationDistributionUniform` has none), uniform
//! floats as `min + (max − min)·u` with `u = next() >> 11 / 2^53`, integers as
//! `min + next() mod (max − min + 1)`, Gaussian values by Box–Muller from two such `u`, then
//! clipped to `[min, max]`. The same `.vast` file therefore always yields the same values
//! (they differ from upstream's Python `random` streams).

use serde_yaml::{Mapping, Value};

use super::vast_file::{scalar_string, ConfigEntry, VastFile};

/// A problem while generating configurations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration '{entry}', variations[{index}]: variation type '{kind}' is not supported (supported: ParameterVariationList, ParameterVariationDistributionUniform, ParameterVariationDistributionGaussian)")]
    Unsupported {
        entry: String,
        index: usize,
        kind: String,
    },
    #[error("configuration '{entry}', variations[{index}] ({kind}): {message}")]
    Invalid {
        entry: String,
        index: usize,
        kind: String,
        message: String,
    },
    #[error("two configurations are both named '{0}'; rename a configuration entry")]
    Duplicate(String),
    /// An error of one variation located in the `.vast` file (what [`generate`] returns);
    /// formatted like [`super::VastError`]. `line` is 1-based, 0 when unknown.
    #[error("{}{}: {field}: {message}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Located {
        path: std::path::PathBuf,
        line: usize,
        field: String,
        message: String,
    },
}

/// One generated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    pub name: String,
    /// The `configuration[]` entry it came from.
    pub entry: String,
    /// Scenario parameters in order of first appearance.
    pub parameters: Vec<(String, Value)>,
}

impl Configuration {
    /// Parameters as a YAML mapping.
    pub fn parameter_map(&self) -> Mapping {
        self.parameters
            .iter()
            .map(|(k, v)| (Value::String(k.clone()), v.clone()))
            .collect()
    }

    fn with(&self, i: usize, set: &[(String, Value)]) -> Configuration {
        let mut parameters = self.parameters.clone();
        for (k, v) in set {
            match parameters.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = v.clone(),
                None => parameters.push((k.clone(), v.clone())),
            }
        }
        Configuration {
            name: format!("{}-{i}", self.name),
            entry: self.entry.clone(),
            parameters,
        }
    }
}

/// Every configuration of the file, in entry order. A variation's error names the file, the
/// line and the field (`configuration[i].variations[j].<type>`).
pub fn generate(vast: &VastFile) -> Result<Vec<Configuration>, ConfigError> {
    let mut all = Vec::new();
    let mut from_entry = Vec::new();
    for (i, entry) in vast.configuration.iter().enumerate() {
        let configs = expand(entry).map_err(|e| locate(vast, i, entry, e))?;
        from_entry.extend(std::iter::repeat_n(i, configs.len()));
        all.extend(configs);
    }
    let mut seen = std::collections::BTreeSet::new();
    for (c, &i) in all.iter().zip(&from_entry) {
        if !seen.insert(c.name.clone()) {
            return Err(ConfigError::Located {
                path: vast.path.clone(),
                line: name_line(&vast.text, &vast.configuration[i].name).unwrap_or(0),
                field: format!("configuration[{i}].name"),
                message: ConfigError::Duplicate(c.name.clone()).to_string(),
            });
        }
    }
    Ok(all)
}

/// `e` (from [`expand`] of entry `i`) located: file, line and field.
fn locate(vast: &VastFile, i: usize, entry: &ConfigEntry, e: ConfigError) -> ConfigError {
    let (index, kind, message) = match e {
        ConfigError::Unsupported {
            index, ref kind, ..
        } => {
            let message = e.to_string();
            let message = message
                .split_once(": ")
                .map(|(_, m)| m.to_string())
                .unwrap_or(message);
            (index, kind.clone(), message)
        }
        ConfigError::Invalid {
            index,
            kind,
            message,
            ..
        } => (index, kind, message),
        other => return other,
    };
    ConfigError::Located {
        path: vast.path.clone(),
        line: variation_line(&vast.text, entry, index),
        field: format!("configuration[{i}].variations[{index}].{kind}"),
        message,
    }
}

fn yaml_key(l: &str) -> &str {
    l.trim_start()
        .trim_start_matches("- ")
        .trim_start_matches('{')
        .trim_start()
}

/// 1-based line of the `name: <name>` of a configuration entry.
fn name_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            yaml_key(l)
                .strip_prefix("name:")
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
        })
        .map(|n| n + 1)
}

/// 1-based line of variation `index` of `entry` (0 if not found): the entry's `name:` line,
/// then the n-th following `<type>:` key, n counting earlier variations of the same type.
fn variation_line(text: &str, entry: &ConfigEntry, index: usize) -> usize {
    let Some((kind, _)) = entry.variations.get(index) else {
        return 0;
    };
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = name_line(text, &entry.name).map(|n| n - 1) else {
        return 0;
    };
    let earlier = entry.variations[..index]
        .iter()
        .filter(|(k, _)| k == kind)
        .count();
    let prefix = format!("{kind}:");
    lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .filter(|(_, l)| yaml_key(l).starts_with(&prefix))
        .nth(earlier)
        .map(|(n, _)| n + 1)
        .unwrap_or(0)
}

/// The configurations of one entry.
pub fn expand(entry: &ConfigEntry) -> Result<Vec<Configuration>, ConfigError> {
    let mut configs = vec![Configuration {
        name: entry.name.clone(),
        entry: entry.name.clone(),
        parameters: entry.parameters.clone(),
    }];
    for (index, (kind, params)) in entry.variations.iter().enumerate() {
        let bad = |message: String| ConfigError::Invalid {
            entry: entry.name.clone(),
            index,
            kind: kind.clone(),
            message,
        };
        let sets: Vec<Vec<(String, Value)>> = match kind.as_str() {
            "ParameterVariationList" => list_variation(params).map_err(bad)?,
            "ParameterVariationDistributionUniform" => {
                let (name, values) = uniform_variation(params).map_err(bad)?;
                values
                    .into_iter()
                    .map(|v| vec![(name.clone(), v)])
                    .collect()
            }
            "ParameterVariationDistributionGaussian" => {
                let (name, values) = gaussian_variation(params).map_err(bad)?;
                values
                    .into_iter()
                    .map(|v| vec![(name.clone(), v)])
                    .collect()
            }
            other => {
                return Err(ConfigError::Unsupported {
                    entry: entry.name.clone(),
                    index,
                    kind: other.to_string(),
                })
            }
        };
        configs = configs
            .iter()
            .flat_map(|parent| {
                sets.iter()
                    .enumerate()
                    .map(move |(i, set)| parent.with(i + 1, set))
            })
            .collect();
    }
    Ok(configs)
}

fn mapping(params: &Value, allowed: &[&str]) -> Result<Mapping, String> {
    let Value::Mapping(m) = params else {
        return Err("expected a mapping of settings".into());
    };
    for k in m.keys() {
        let k = k.as_str().unwrap_or("<non-string>");
        if !allowed.contains(&k) {
            return Err(format!(
                "unknown key `{k}`, expected one of {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(m.clone())
}

/// The destination parameter name(s): `name` (upstream 736bbf0) or `scenario` (later upstream).
fn destination(m: &Mapping) -> Result<Vec<String>, String> {
    let v = m
        .get("name")
        .or_else(|| m.get("scenario"))
        .ok_or("missing `name` (the scenario parameter)")?;
    match v {
        Value::String(s) if !s.is_empty() => Ok(vec![s.clone()]),
        Value::Sequence(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(String::from)
                    .ok_or_else(|| "`name` list entries must be strings".to_string())
            })
            .collect(),
        _ => Err("`name` must be a parameter name or a list of names".into()),
    }
}

fn list_variation(params: &Value) -> Result<Vec<Vec<(String, Value)>>, String> {
    let m = mapping(params, &["name", "scenario", "values"])?;
    let names = destination(&m)?;
    let values = match m.get("values") {
        Some(Value::Sequence(v)) if !v.is_empty() => v.clone(),
        _ => {
            return Err(
                "Parameter 'values' must be a non-empty list for ParameterVariationList".into(),
            )
        }
    };
    if names.len() == 1 {
        return Ok(values
            .into_iter()
            .map(|v| vec![(names[0].clone(), v)])
            .collect());
    }
    values
        .into_iter()
        .map(|entry| match entry {
            Value::Sequence(items) if items.len() == names.len() => {
                Ok(names.iter().cloned().zip(items).collect())
            }
            other => Err(format!(
                "Each entry in 'values' must be a list of length {} to match {:?}, got: {}",
                names.len(),
                names,
                serde_yaml::to_string(&other).unwrap_or_default().trim()
            )),
        })
        .collect()
}

fn number(m: &Mapping, key: &str) -> Result<Option<f64>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a number")),
        Some(_) => Err(format!("`{key}` must be a number")),
    }
}

fn count_and_seed(m: &Mapping, seed_required: bool) -> Result<(usize, u64), String> {
    let n = match m.get("num_variations") {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or("`num_variations` must be a positive integer")?,
        _ => return Err("missing `num_variations` (a positive integer)".into()),
    };
    let seed = match m.get("seed") {
        None | Some(Value::Null) if seed_required => {
            return Err("Parameter 'seed' is required".into())
        }
        None | Some(Value::Null) => 0,
        Some(Value::Number(s)) => s
            .as_i64()
            .map(|s| s as u64)
            .or_else(|| s.as_u64())
            .ok_or("`seed` must be an integer")?,
        Some(_) => return Err("`seed` must be an integer".into()),
    };
    Ok((n as usize, seed))
}

fn value_type(m: &Mapping) -> Result<String, String> {
    match m.get("type") {
        None | Some(Value::Null) => Ok("float".into()),
        Some(v) => scalar_string(v).ok_or_else(|| "`type` must be a string".into()),
    }
}

fn uniform_variation(params: &Value) -> Result<(String, Vec<Value>), String> {
    let m = mapping(
        params,
        &[
            "name",
            "scenario",
            "num_variations",
            "min",
            "max",
            "type",
            "seed",
        ],
    )?;
    let name = single_destination(&m)?;
    let (n, seed) = count_and_seed(&m, false)?;
    let (Some(min), Some(max)) = (number(&m, "min")?, number(&m, "max")?) else {
        return Err(
            "Parameters 'min' and 'max' are required for ParameterVariationDistributionUniform"
                .into(),
        );
    };
    if min > max {
        return Err(format!("`min` ({min}) is greater than `max` ({max})"));
    }
    let ty = value_type(&m)?;
    let ints = is_int(m.get("min")) && is_int(m.get("max"));
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let v = match ty.as_str() {
            "int" | "integer" => Value::from(rng.int_in(min.ceil() as i64, max.floor() as i64)),
            "float" | "double" | "number" => Value::from(min + (max - min) * rng.unit()),
            "bool" => Value::Bool(rng.unit() < max),
            "string" if ints => Value::String(rng.int_in(min as i64, max as i64).to_string()),
            "string" => Value::String((min + (max - min) * rng.unit()).to_string()),
            other => {
                return Err(format!(
                    "unknown `type` '{other}' (int, float, bool or string)"
                ))
            }
        };
        out.push(v);
    }
    Ok((name, out))
}

fn gaussian_variation(params: &Value) -> Result<(String, Vec<Value>), String> {
    let m = mapping(
        params,
        &[
            "name",
            "scenario",
            "num_variations",
            "mean",
            "std",
            "min",
            "max",
            "type",
            "seed",
        ],
    )?;
    let name = single_destination(&m)?;
    let (n, seed) = count_and_seed(&m, true)?;
    let mean = number(&m, "mean")?.ok_or("Parameter 'mean' is required")?;
    let std = number(&m, "std")?.ok_or("Parameter 'std' is required")?;
    if std < 0.0 {
        return Err("`std` must not be negative".into());
    }
    let (min, max) = (number(&m, "min")?, number(&m, "max")?);
    let ty = value_type(&m)?;
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let u1 = 1.0 - rng.unit(); // (0, 1]
        let u2 = rng.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let mut v = mean + std * z;
        if let Some(lo) = min {
            v = v.max(lo);
        }
        if let Some(hi) = max {
            v = v.min(hi);
        }
        out.push(match ty.as_str() {
            "int" | "integer" => Value::from(v.round() as i64),
            "float" | "double" | "number" => Value::from(v),
            "bool" => Value::Bool(v >= mean),
            "string" => Value::String(v.to_string()),
            other => {
                return Err(format!(
                    "unknown `type` '{other}' (int, float, bool or string)"
                ))
            }
        });
    }
    Ok((name, out))
}

fn single_destination(m: &Mapping) -> Result<String, String> {
    let mut names = destination(m)?;
    if names.len() != 1 {
        return Err("`name` must be a single parameter name for random variations".into());
    }
    Ok(names.remove(0))
}

fn is_int(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Number(n)) if n.is_i64() || n.is_u64())
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and stable across platforms and versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [lo, hi] (hi < lo gives lo).
    fn int_in(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (self.next() as u128 % span) as i128) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(yaml: &str) -> ConfigEntry {
        let text = format!("version: 1\nconfiguration:\n{yaml}\nexecution: {{image: i:1, runs: 1, scenario_file: scenario.osc}}\n");
        let v = VastFile::parse(std::path::Path::new("t.vast"), &text).unwrap();
        v.configuration[0].clone()
    }

    #[test]
    fn chained_lists_name_like_upstream() {
        let e = entry("- name: test\n  variations:\n  - ParameterVariationList: {name: growth_rate, values: [0.05, 0.1, 0.3, 0.5]}\n  - ParameterVariationList: {name: initial_population, values: [50, 100, 200]}");
        let c = expand(&e).unwrap();
        let names: Vec<_> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), 12);
        assert_eq!(names[0], "test-1-1");
        assert_eq!(names[1], "test-1-2");
        assert_eq!(names[3], "test-2-1");
        assert_eq!(names[11], "test-4-3");
        assert_eq!(
            c[4].parameters,
            vec![
                ("growth_rate".into(), Value::from(0.1)),
                ("initial_population".into(), Value::from(100))
            ]
        );
    }

    #[test]
    fn fixed_entry_keeps_name_and_overrides() {
        let e = entry("- name: test-fixed-values\n  parameters:\n  - growth_rate: 0.07\n  - initial_population: 123");
        let c = expand(&e).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "test-fixed-values");
        let e = entry("- name: t\n  parameters:\n  - a: 1\n  variations:\n  - ParameterVariationList: {name: a, values: [2]}");
        assert_eq!(
            expand(&e).unwrap()[0].parameters,
            vec![("a".into(), Value::from(2))]
        );
    }

    #[test]
    fn random_variations_are_reproducible() {
        let y = "- name: r\n  variations:\n  - ParameterVariationDistributionUniform: {name: x, num_variations: 5, min: 1.0, max: 2.0, seed: 42}\n  - ParameterVariationDistributionGaussian: {name: y, num_variations: 3, mean: 10, std: 2, min: 5, max: 15, seed: 7, type: int}";
        let a = expand(&entry(y)).unwrap();
        let b = expand(&entry(y)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 15);
        assert_eq!(a[14].name, "r-5-3");
        for c in &a {
            let x = c.parameters[0].1.as_f64().unwrap();
            assert!((1.0..2.0).contains(&x));
            let y = c.parameters[1].1.as_i64().unwrap();
            assert!((5..=15).contains(&y));
        }
        // A different seed gives different values.
        let other = expand(&entry(&y.replace("seed: 42", "seed: 43"))).unwrap();
        assert_ne!(a[0].parameters[0].1, other[0].parameters[0].1);
        // Documented stream: first value of seed 42.
        let mut r = SplitMix64(42);
        assert_eq!(a[0].parameters[0].1, Value::from(1.0 + r.unit()));
    }

    #[test]
    fn errors_name_the_variation() {
        let e = entry("- name: t\n  variations:\n  - OneOfVariation: {x: 1}");
        assert_eq!(expand(&e).unwrap_err().to_string(), "configuration 't', variations[0]: variation type 'OneOfVariation' is not supported (supported: ParameterVariationList, ParameterVariationDistributionUniform, ParameterVariationDistributionGaussian)");
        let e =
            entry("- name: t\n  variations:\n  - ParameterVariationList: {name: a, values: []}");
        assert_eq!(expand(&e).unwrap_err().to_string(), "configuration 't', variations[0] (ParameterVariationList): Parameter 'values' must be a non-empty list for ParameterVariationList");
        let e = entry("- name: t\n  variations:\n  - ParameterVariationDistributionGaussian: {name: a, num_variations: 2, mean: 1, std: 1}");
        assert_eq!(expand(&e).unwrap_err().to_string(), "configuration 't', variations[0] (ParameterVariationDistributionGaussian): Parameter 'seed' is required");
        let e = entry("- name: t\n  variations:\n  - ParameterVariationDistributionUniform: {name: a, num_variations: 2}");
        assert!(expand(&e)
            .unwrap_err()
            .to_string()
            .contains("'min' and 'max' are required"));
    }

    #[test]
    fn multi_destination_list() {
        let e = entry("- name: m\n  variations:\n  - ParameterVariationList:\n      name: [a, b]\n      values: [[1, 2], [3, 4]]");
        let c = expand(&e).unwrap();
        assert_eq!(
            c[1].parameters,
            vec![("a".into(), Value::from(3)), ("b".into(), Value::from(4))]
        );
    }
}
