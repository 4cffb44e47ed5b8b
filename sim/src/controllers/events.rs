//! Events (`core/v1`) as the real controllers record them: the scheduler (`Scheduled`,
//! `FailedScheduling`), the kubelet (`Pulled`, `Created`, `Started`, `Failed`), the job
//! controller (`SuccessfulCreate`, `SuccessfulDelete`, `Completed`, `BackoffLimitExceeded`,
//! ...) and Kueue (`CreatedWorkload`, `QuotaReserved`, `Admitted`, `Started`, `Pending`).
//! A repeated event (same object, reason and message) bumps `count` and `lastTimestamp`, as
//! the client-go recorder aggregates (an event's name is `<object>.<hash of object uid,
//! reason and message>`, so a repeat is found with one lookup).
//!
//! Memory stays bounded: at most [`MAX_PER_NAMESPACE`] events per namespace (past it the
//! oldest tenth goes), and [`prune`] deletes events whose object is gone or that are older than
//! [`TTL_SECS`] (the API server's default event TTL is one hour).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::store::{self, keys, now_rfc3339, Store};

/// Events kept per namespace at most; past it the oldest tenth is deleted.
pub const MAX_PER_NAMESPACE: usize = 1000;
/// Age after which an event is deleted.
pub const TTL_SECS: i64 = 3600;

/// Who records an event: `source.component` and `reportingComponent`.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Scheduler,
    Kubelet,
    JobController,
    Kueue,
}

impl Source {
    fn component(self) -> &'static str {
        match self {
            Source::Scheduler => "default-scheduler",
            Source::Kubelet => "kubelet",
            Source::JobController => "job-controller",
            Source::Kueue => "kueue-admission",
        }
    }
}

/// Records an event about `obj` (`Normal` unless `warning`).
pub fn record(store: &Store, obj: &Value, warning: bool, reason: &str, message: &str, src: Source) {
    let ns = match store::namespace_of(obj) {
        "" => "default",
        n => n,
    };
    let uid = store::uid_of(obj);
    let key: Arc<str> = Arc::from(keys::EVENTS);
    let now = now_rfc3339();
    // The event's name is derived from (object, reason, message), so the aggregation finds a
    // repeat with one lookup instead of a scan of the namespace's events.
    let name = store::name_of(obj);
    let digest = {
        let mut h = std::hash::DefaultHasher::new();
        (uid, reason, message).hash(&mut h);
        h.finish()
    };
    let same = |e: &Value| {
        e.pointer("/involvedObject/uid").and_then(Value::as_str) == Some(uid)
            && e.get("reason").and_then(Value::as_str) == Some(reason)
            && e.get("message").and_then(Value::as_str) == Some(message)
    };
    let mut event_name = format!("{name}.{digest:016x}");
    if let Some(e) = store.get(&key, ns, &event_name) {
        if same(&e) {
            let _ = store.modify(&key, ns, &event_name, |cur| {
                let mut c = cur.clone();
                c["count"] = json!(cur.get("count").and_then(Value::as_i64).unwrap_or(1) + 1);
                c["lastTimestamp"] = json!(now);
                Ok(c)
            });
            return;
        }
        // a hash collision: a name of its own
        event_name = format!("{name}.{:x}", jiff::Timestamp::now().as_nanosecond());
    }
    let host = (matches!(src, Source::Kubelet))
        .then(|| obj.pointer("/spec/nodeName").and_then(Value::as_str))
        .flatten();
    let mut source = json!({"component": src.component()});
    if let Some(h) = host {
        source["host"] = json!(h);
    }
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name, "namespace": ns},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion").cloned().unwrap_or(json!("v1")),
            "kind": obj.get("kind").cloned().unwrap_or(json!("")),
            "name": name, "namespace": store::namespace_of(obj), "uid": uid,
            "resourceVersion": store::meta_str(obj, "resourceVersion").unwrap_or(""),
        },
        "reason": reason, "message": message, "type": if warning { "Warning" } else { "Normal" },
        "source": source, "reportingComponent": src.component(), "reportingInstance": host.unwrap_or(""),
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "eventTime": null,
    });
    let _ = store.create(&key, event);
    let count = store.count(keys::EVENTS, ns);
    if count > MAX_PER_NAMESPACE {
        // the oldest tenth goes at once, so the sort by age runs once per MAX/10 events
        // instead of on every event at the bound
        let (_, existing) = store.list(keys::EVENTS, Some(ns));
        let mut old: Vec<&Arc<Value>> = existing.iter().collect();
        old.sort_by_cached_key(|e| store::rv_of(e));
        let keep = MAX_PER_NAMESPACE - MAX_PER_NAMESPACE / 10;
        for e in old.iter().take(count.saturating_sub(keep)) {
            let _ = store.delete(&key, ns, store::name_of(e), None, None, None);
        }
    }
}

/// Deletes events whose object no longer exists and events older than [`TTL_SECS`].
pub fn prune(store: &Store) {
    let (_, events) = store.list(keys::EVENTS, None);
    if events.is_empty() {
        return;
    }
    let key: Arc<str> = Arc::from(keys::EVENTS);
    let now = jiff::Timestamp::now().as_second();
    for e in &events {
        let uid = e
            .pointer("/involvedObject/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let last = e
            .get("lastTimestamp")
            .and_then(Value::as_str)
            .or_else(|| store::meta_str(e, "creationTimestamp"))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(now, |t| t.as_second());
        if (!uid.is_empty() && !store.uid_exists(uid)) || now - last > TTL_SECS {
            let _ = store.delete(
                &key,
                store::namespace_of(e),
                store::name_of(e),
                None,
                None,
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(store: &Store, name: &str) -> Arc<Value> {
        store
            .create(
                &Arc::from(keys::PODS),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}}),
            )
            .expect("pod")
    }

    #[test]
    fn repeats_aggregate_and_the_ring_is_bounded() {
        let store = Store::new(100);
        let p = pod(&store, "p");
        record(&store, &p, false, "Pulled", "same", Source::Kubelet);
        record(&store, &p, false, "Pulled", "same", Source::Kubelet);
        let (_, evs) = store.list(keys::EVENTS, Some("ns"));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["count"], 2);
        for i in 0..MAX_PER_NAMESPACE + 5 {
            record(
                &store,
                &p,
                false,
                "Started",
                &format!("m{i}"),
                Source::Kubelet,
            );
        }
        let (_, evs) = store.list(keys::EVENTS, Some("ns"));
        assert!(evs.len() <= MAX_PER_NAMESPACE);
        assert!(evs.len() >= MAX_PER_NAMESPACE - MAX_PER_NAMESPACE / 10);
        assert!(
            !evs.iter().any(|e| e["message"] == "same"),
            "oldest go first"
        );
        assert!(evs
            .iter()
            .any(|e| e["message"] == format!("m{}", MAX_PER_NAMESPACE + 4)));
    }

    #[test]
    fn prune_drops_events_of_gone_objects_and_old_ones() {
        let store = Store::new(100);
        let kept = pod(&store, "kept");
        let gone = pod(&store, "gone");
        record(&store, &kept, false, "Started", "fresh", Source::Kubelet);
        record(&store, &gone, false, "Started", "orphan", Source::Kubelet);
        let old = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "old", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "kept", "uid": store::uid_of(&kept)},
            "reason": "Started", "message": "old", "lastTimestamp": "2020-01-01T00:00:00Z"});
        store.create(&Arc::from(keys::EVENTS), old).expect("event");
        store
            .delete(&Arc::from(keys::PODS), "ns", "gone", None, None, None)
            .expect("delete");
        prune(&store);
        let (_, evs) = store.list(keys::EVENTS, Some("ns"));
        let messages: Vec<&str> = evs.iter().filter_map(|e| e["message"].as_str()).collect();
        assert_eq!(messages, ["fresh"]);
    }
}
