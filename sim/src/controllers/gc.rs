//! Garbage collection and namespace termination: dependents whose owners are all gone are
//! deleted (background propagation); owners in foreground deletion delete their dependents
//! and lose the `foregroundDeletion` finalizer once none is left; `orphan` deletion strips
//! the owner reference from dependents; a terminating namespace deletes its content and then
//! itself.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::store::{self, keys, Store};

fn drop_finalizer(store: &Store, key: &Arc<str>, obj: &Value, f: &str) {
    let _ = store.modify(key, store::namespace_of(obj), store::name_of(obj), |cur| {
        let mut c = cur.clone();
        let fins: Vec<String> = store::finalizers_of(cur)
            .into_iter()
            .filter(|x| x != f)
            .collect();
        c["metadata"]["finalizers"] = json!(fins);
        Ok(c)
    });
}

/// An object with its store key.
type Entry = (Arc<str>, Arc<Value>);

pub fn reconcile(store: &Store) {
    let resources = store.resources();
    let mut all: Vec<Entry> = Vec::new();
    for r in &resources {
        let (_, items) = store.list(r, None);
        all.extend(items.into_iter().map(|o| (r.clone(), o)));
    }
    // owner uid -> dependents
    let mut dependents: HashMap<&str, Vec<&Entry>> = HashMap::new();
    let mut owners: HashMap<&str, &Arc<Value>> = HashMap::new();
    for entry in &all {
        owners.insert(store::uid_of(&entry.1), &entry.1);
    }
    let mut owner_refs: Vec<(&Entry, Vec<String>)> = Vec::new();
    for entry in &all {
        let uids = store::owner_uids(&entry.1);
        if !uids.is_empty() {
            owner_refs.push((entry, uids));
        }
    }
    for (entry, uids) in &owner_refs {
        for u in uids {
            if let Some((k, _)) = owners.get_key_value(u.as_str()) {
                dependents.entry(k).or_default().push(entry);
            }
        }
    }
    // dependents of vanished owners
    for (entry, uids) in &owner_refs {
        if uids.iter().all(|u| !owners.contains_key(u.as_str())) && !store::is_deleting(&entry.1) {
            let _ = store.delete(
                &entry.0,
                store::namespace_of(&entry.1),
                store::name_of(&entry.1),
                None,
                None,
                None,
            );
        }
    }
    for (key, obj) in &all {
        if !store::is_deleting(obj) {
            continue;
        }
        let fins = store::finalizers_of(obj);
        let deps = dependents
            .get(store::uid_of(obj))
            .cloned()
            .unwrap_or_default();
        if fins.iter().any(|f| f == "foregroundDeletion") {
            if deps.is_empty() {
                drop_finalizer(store, key, obj, "foregroundDeletion");
            } else {
                for (dk, d) in deps.iter().map(|e| (&e.0, &e.1)) {
                    if !store::is_deleting(d) {
                        let _ = store.delete(
                            dk,
                            store::namespace_of(d),
                            store::name_of(d),
                            Some("foregroundDeletion"),
                            None,
                            None,
                        );
                    }
                }
            }
        } else if fins.iter().any(|f| f == "orphan") {
            let uid = store::uid_of(obj).to_string();
            for (dk, d) in deps.iter().map(|e| (&e.0, &e.1)) {
                let _ = store.modify(dk, store::namespace_of(d), store::name_of(d), |cur| {
                    let mut c = cur.clone();
                    if let Some(refs) = c
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                    }
                    Ok(c)
                });
            }
            drop_finalizer(store, key, obj, "orphan");
        } else if &**key == keys::NAMESPACES && fins.iter().any(|f| f == "kubernetes") {
            let ns = store::name_of(obj);
            let mut remaining = 0;
            for (k, o) in &all {
                if store::namespace_of(o) == ns && &**k != keys::NAMESPACES {
                    remaining += 1;
                    if !store::is_deleting(o) {
                        let _ = store.delete(k, ns, store::name_of(o), None, None, None);
                    }
                }
            }
            if remaining == 0 {
                drop_finalizer(store, key, obj, "kubernetes");
            }
        }
    }
}
