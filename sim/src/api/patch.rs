//! Patch semantics: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
//! (lists of objects with a `name` merge by name; `$`-directives are honoured for `$patch:
//! delete|replace` and otherwise dropped) and server-side apply with field managers.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// Errors of patching.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the body of the {kind} request is not valid: {why}")]
    Body { kind: &'static str, why: String },
    #[error("{0}")]
    JsonPatch(String),
    #[error("Apply failed with {} conflict(s): {}", .0.len(), .0.iter().map(|(m, p)| format!("conflict with \"{m}\": {p}")).collect::<Vec<_>>().join("; "))]
    Conflicts(Vec<(String, String)>),
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), Error> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| Error::Body {
        kind: "json-patch",
        why: e.to_string(),
    })?;
    json_patch::patch(target, &p).map_err(|e| Error::JsonPatch(e.to_string()))
}

/// Strategic merge patch, for the fields vast and kubectl touch.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut p = p.clone();
                p.remove("$patch");
                *t = p;
                return;
            }
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                match t.get_mut(k) {
                    Some(existing) => strategic_merge(existing, v),
                    None => {
                        let mut fresh = Value::Null;
                        strategic_merge(&mut fresh, v);
                        t.insert(k.clone(), fresh);
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p)) if is_named_list(p) && is_named_list(t) => {
            for item in p {
                let name = item.get("name").cloned();
                let pos = t.iter().position(|x| x.get("name") == name.as_ref());
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        t.remove(i);
                    }
                    (Some(i), false) => strategic_merge(&mut t[i], item),
                    (None, false) => {
                        let mut fresh = Value::Null;
                        strategic_merge(&mut fresh, item);
                        t.push(fresh);
                    }
                    (None, true) => {}
                }
            }
        }
        (target, patch) => {
            *target = strip_directives(patch);
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn is_named_list(a: &[Value]) -> bool {
    a.iter()
        .all(|x| x.get("name").is_some_and(Value::is_string))
}

/// Metadata fields that are never owned by a manager.
fn unmanaged(path: &[String]) -> bool {
    matches!(
        path.first().map(String::as_str),
        Some("apiVersion" | "kind")
    ) || (path.first().map(String::as_str) == Some("metadata")
        && matches!(
            path.get(1).map(String::as_str),
            Some(
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "managedFields"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
            )
        ))
}

/// Leaf paths of an object (arrays and scalars are leaves).
fn leaf_paths(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v {
        // an empty object owns nothing
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() && !unmanaged(prefix) {
                out.insert(prefix.clone());
            }
        }
    }
}

/// `fieldsV1` from a path set (`{"f:spec":{"f:replicas":{}}}`).
fn to_fields_v1(paths: &BTreeSet<Vec<String>>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let entry = cur.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            match entry.as_object_mut() {
                Some(m) => cur = m,
                None => break,
            }
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    if let Value::Object(m) = v {
        let children: Vec<_> = m
            .iter()
            .filter_map(|(k, c)| k.strip_prefix("f:").map(|k| (k, c)))
            .collect();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, c) in children {
            prefix.push(k.to_string());
            from_fields_v1(c, prefix, out);
            prefix.pop();
        }
    }
}

fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| cur.get(seg))
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Apply managers recorded on an object: (manager, owned paths).
fn apply_managers(obj: &Value) -> Vec<(String, BTreeSet<Vec<String>>)> {
    let Some(entries) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|e| e.get("operation").and_then(Value::as_str) == Some("Apply"))
        .filter_map(|e| {
            let manager = e.get("manager")?.as_str()?.to_string();
            let mut set = BTreeSet::new();
            from_fields_v1(
                e.get("fieldsV1").unwrap_or(&Value::Null),
                &mut Vec::new(),
                &mut set,
            );
            Some((manager, set))
        })
        .collect()
}

/// Server-side apply of `applied` by `manager` onto `current` (`None`: the object is new).
/// Fields owned by another apply manager with a different value conflict unless `force`
/// (then ownership moves). Fields this manager applied before and no longer applies are
/// removed unless another manager owns them. Lists are atomic.
pub fn server_side_apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
) -> Result<Value, Error> {
    let mut new_set = BTreeSet::new();
    leaf_paths(applied, &mut Vec::new(), &mut new_set);
    let mut managers = current.map(apply_managers).unwrap_or_default();
    let mut result = current.cloned().unwrap_or_else(|| json!({}));
    let mut conflicts = Vec::new();
    if let Some(cur) = current {
        for (other, set) in managers.iter_mut().filter(|(m, _)| m != manager) {
            let clashing: Vec<Vec<String>> = set
                .iter()
                .filter(|owned| {
                    new_set
                        .iter()
                        .any(|p| overlaps(p, owned) && get_path(cur, p) != get_path(applied, p))
                })
                .cloned()
                .collect();
            if clashing.is_empty() {
                continue;
            }
            if force {
                for p in clashing {
                    set.remove(&p);
                }
            } else {
                conflicts.extend(
                    clashing
                        .into_iter()
                        .map(|p| (other.clone(), format!(".{}", p.join(".")))),
                );
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::Conflicts(conflicts));
    }
    // fields this manager dropped
    if let Some((_, old)) = managers.iter().find(|(m, _)| m == manager) {
        for p in old.difference(&new_set) {
            let owned_by_other = managers
                .iter()
                .any(|(m, s)| m != manager && s.iter().any(|o| overlaps(o, p)));
            if !owned_by_other && !new_set.iter().any(|n| overlaps(n, p)) {
                remove_path(&mut result, p);
            }
        }
    }
    let mut overlay = applied.clone();
    if let Some(m) = overlay.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    apply_overlay(&mut result, &overlay);
    managers.retain(|(m, _)| m != manager);
    managers.push((manager.to_string(), new_set));
    let now = crate::store::now_rfc3339();
    let mut entries: Vec<Value> = current
        .and_then(|c| c.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|e| e.get("operation").and_then(Value::as_str) != Some("Apply"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for (m, set) in &managers {
        if set.is_empty() {
            continue;
        }
        entries.push(json!({
            "manager": m, "operation": "Apply", "apiVersion": api_version, "time": now,
            "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(set),
        }));
    }
    if let Some(meta) = result
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
    {
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
    Ok(result)
}

/// Like a merge patch, but `null` in the applied config does not delete.
fn apply_overlay(target: &mut Value, overlay: &Value) {
    match (target, overlay) {
        (Value::Object(t), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        apply_overlay(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, o) => *t = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"$setElementOrder/containers": [], "containers": [{"name": "b", "image": "z"}]}}),
        );
        assert_eq!(t["spec"]["containers"][1]["image"], "z");
        assert_eq!(t["spec"]["containers"][0]["image"], "x");
    }

    #[test]
    fn apply_conflicts_removes_and_forces() {
        let first = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}});
        let obj = server_side_apply(None, &first, "m1", false, "v1").unwrap();
        // m2 sets a different value of a field m1 owns: conflict
        let clash = json!({"metadata": {"name": "x", "labels": {"a": "9"}}});
        assert!(
            matches!(server_side_apply(Some(&obj), &clash, "m2", false, "v1"), Err(Error::Conflicts(c)) if c.len() == 1)
        );
        let forced = server_side_apply(Some(&obj), &clash, "m2", true, "v1").unwrap();
        assert_eq!(forced["metadata"]["labels"]["a"], "9");
        // m1 drops label b: removed; label a is now m2's and stays
        let again = server_side_apply(
            Some(&forced),
            &json!({"metadata": {"name": "x", "labels": {}}}),
            "m1",
            false,
            "v1",
        )
        .unwrap();
        assert_eq!(again["metadata"]["labels"], json!({"a": "9"}));
    }
}
