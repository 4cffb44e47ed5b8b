//! Label and field selectors: the `labelSelector=` and `fieldSelector=` query parameters of
//! the API ([`crate::api`]), and a Service's selector when a host name is resolved to its pod
//! ([`crate::controllers::resolve::service_resolver`]). Pure parsing and matching on JSON
//! objects; no dependencies inside the crate. Also [`parse_bool`], the boolean query
//! parameters of the API and the data plane (`watch=True`, `stdout=1`).

use serde_json::Value;

/// A boolean query parameter as Go's `strconv.ParseBool` reads it (the API server parses
/// query parameters with it): `1 t T TRUE true True` and `0 f F FALSE false False`; anything
/// else is `None`. The official Python client sends `True`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Errors parsing a selector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unable to parse requirement {term:?} of selector {selector:?}: {why}")]
    Parse {
        selector: String,
        term: String,
        why: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; terms are ANDed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn set_values(selector: &str, term: &str, rest: &str) -> Result<Vec<String>, Error> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| Error::Parse {
            selector: selector.into(),
            term: term.into(),
            why: "expected a set (a,b)",
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(selector: &str) -> Result<Self, Error> {
        let mut reqs = Vec::new();
        for term in split_terms(selector) {
            let t = term.as_str();
            let req = if let Some((k, v)) = t.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(idx) = t.find(" notin ") {
                Req::NotIn(
                    t[..idx].trim().into(),
                    set_values(selector, t, &t[idx + 7..])?,
                )
            } else if let Some(idx) = t.find(" in ") {
                Req::In(
                    t[..idx].trim().into(),
                    set_values(selector, t, &t[idx + 4..])?,
                )
            } else if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else if t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Req::Exists(t.into())
            } else {
                return Err(Error::Parse {
                    selector: selector.into(),
                    term: term.clone(),
                    why: "unknown operator",
                });
            };
            let bad = |why| Error::Parse {
                selector: selector.into(),
                term: term.clone(),
                why,
            };
            let (key, values): (&str, Vec<&str>) = match &req {
                Req::Eq(k, v) | Req::NotEq(k, v) => (k, vec![v.as_str()]),
                Req::In(k, vs) | Req::NotIn(k, vs) => (k, vs.iter().map(String::as_str).collect()),
                Req::Exists(k) | Req::NotExists(k) => (k, vec![]),
            };
            if !valid_label_key(key) {
                return Err(bad("invalid label key (a qualified name: [prefix/]name of alphanumerics, '-', '_', '.')"));
            }
            if !values.iter().all(|v| valid_label_value(v)) {
                return Err(bad("invalid label value (at most 63 alphanumerics, '-', '_', '.', starting and ending alphanumeric)"));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a labels map (`metadata.labels` or a Service selector's target) matches.
    pub fn matches_labels(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.is_empty() || self.matches_labels(obj.pointer("/metadata/labels"))
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, ANDed. Any dotted
/// path of the object works (`metadata.name`, `status.phase`, `spec.nodeName`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(selector: &str) -> Result<Self, Error> {
        let mut reqs = Vec::new();
        for term in split_terms(selector) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(Error::Parse {
                    selector: selector.into(),
                    term: term.clone(),
                    why: "expected = or !=",
                });
            };
            reqs.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut cur = Some(obj);
            for part in path.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let have = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            (have == *want) == *eq
        })
    }

    /// The value required for `metadata.name`, if the selector pins it.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, eq, _)| p == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

/// A label value as the API server accepts it: empty, or at most 63 characters of
/// alphanumerics, `-`, `_`, `.`, beginning and ending with an alphanumeric.
fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a non-empty name valid as a
/// label value.
fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    });
    prefix_ok && !name.is_empty() && valid_label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "x"}}});
        for (sel, want) in [
            ("a=1", true),
            ("a==1,b=x", true),
            ("a!=1", false),
            ("a in (1,2)", true),
            ("b notin (x)", false),
            ("c", false),
            ("!c", true),
            ("a,b in (y, x)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&obj),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("a in 1").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "p"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("metadata.name=p,status.phase!=Pending")
                .unwrap()
                .matches(&obj)
        );
        assert!(!FieldSelector::parse("status.phase=Pending")
            .unwrap()
            .matches(&obj));
        assert_eq!(
            FieldSelector::parse("metadata.name=p").unwrap().name(),
            Some("p")
        );
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        for bad in [
            "a===b",
            "a=-x",
            "a in (x y)",
            "Foo/bar=1",
            "=x",
            "a=b!",
            "a/=1",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "a=b",
            "kueue.x-k8s.io/queue-name=robovast",
            "a=",
            "x in (a,b)",
            "!k",
            "a.b_c-d",
        ] {
            assert!(LabelSelector::parse(good).is_ok(), "{good}");
        }
    }
}
