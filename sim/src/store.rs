//! The object store: every Kubernetes object as JSON, keyed by resource (`group/plural`; the
//! built-in ones in [`keys`]), namespace and name, with one global resourceVersion counter, a
//! bounded event history for watches, and the deletion rule (an object with finalizers only
//! gets a `deletionTimestamp`; it disappears once its last finalizer is removed). The lowest
//! layer of the crate: it imports no other module of it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Store keys (`group/plural`) of the built-in resources the API server, admission and the
/// controllers name directly.
pub mod keys {
    pub const NAMESPACES: &str = "/namespaces";
    pub const NODES: &str = "/nodes";
    pub const PODS: &str = "/pods";
    pub const SERVICES: &str = "/services";
    pub const CONFIGMAPS: &str = "/configmaps";
    pub const SECRETS: &str = "/secrets";
    pub const PVCS: &str = "/persistentvolumeclaims";
    pub const EVENTS: &str = "/events";
    pub const SERVICEACCOUNTS: &str = "/serviceaccounts";
    pub const ENDPOINTS: &str = "/endpoints";
    pub const JOBS: &str = "batch/jobs";
    pub const CRDS: &str = "apiextensions.k8s.io/customresourcedefinitions";
    pub const WORKLOADS: &str = "kueue.x-k8s.io/workloads";
    pub const CLUSTERQUEUES: &str = "kueue.x-k8s.io/clusterqueues";
    pub const LOCALQUEUES: &str = "kueue.x-k8s.io/localqueues";
    pub const RESOURCEFLAVORS: &str = "kueue.x-k8s.io/resourceflavors";
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of one object.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub resource: Arc<str>,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The object before this change (`None` for ADDED).
    pub prev: Option<Arc<Value>>,
}

/// Errors of store operations; the API layer renders them as `Status` objects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {reason}")]
    Conflict {
        resource: String,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("too old resource version: {requested} (oldest kept: {oldest})")]
    Expired { requested: u64, oldest: u64 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// (namespace, name); namespace is empty for cluster-scoped objects.
pub type ObjKey = (String, String);

struct Inner {
    rv: u64,
    objects: HashMap<Arc<str>, BTreeMap<ObjKey, Arc<Value>>>,
    uids: HashSet<String>,
    history: VecDeque<Event>,
    /// [`approx_heap_size`] of each history event's object, and their sum.
    history_sizes: VecDeque<usize>,
    history_bytes: usize,
    /// Watches from a resourceVersion below this are expired (410).
    compacted: u64,
}

impl Inner {
    /// The stored object at `key`, or `NotFound`.
    fn current(&self, resource: &Arc<str>, key: &ObjKey) -> Result<Arc<Value>> {
        self.objects
            .get(resource)
            .and_then(|m| m.get(key))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                resource: resource.to_string(),
                name: key.1.clone(),
            })
    }
}

/// The store. Cheap to share behind an `Arc`.
///
/// Watches follow the event history, not a channel of events: a write publishes only its
/// resourceVersion ([`Store::subscribe`]) and each watch reads the events after its cursor
/// from the history ([`Store::events_after`]). So an object version is held by the store and
/// at most the bounded history, never by a per-watch or per-channel backlog.
pub struct Store {
    inner: RwLock<Inner>,
    tx: watch::Sender<u64>,
    changed: Notify,
    history_len: usize,
    history_bytes: usize,
    watch_epoch: Mutex<CancellationToken>,
}

/// `metadata` accessors on JSON objects.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn namespace_of(obj: &Value) -> &str {
    meta_str(obj, "namespace").unwrap_or("")
}

pub fn uid_of(obj: &Value) -> &str {
    meta_str(obj, "uid").unwrap_or("")
}

pub fn rv_of(obj: &Value) -> u64 {
    meta_str(obj, "resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn finalizers_of(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// Owner UIDs from `metadata.ownerReferences`.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Current time as Kubernetes renders it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now.to_string())
}

/// A random UID in the usual 8-4-4-4-12 form.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn metadata_mut(obj: &mut Value) -> Result<&mut serde_json::Map<String, Value>> {
    if !obj.is_object() {
        return Err(Error::Invalid("object must be a JSON object".into()));
    }
    let meta = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
        .ok_or_else(|| Error::Invalid("object must be a JSON object".into()))?;
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .ok_or_else(|| Error::Invalid("metadata must be an object".into()))
}

/// Default bound of the watch history's memory: the estimated heap size of the objects its
/// events hold. Past it the oldest events are dropped (a watch or list continuation from
/// before them gets 410 Expired), as past the count bound.
pub const HISTORY_BYTES: usize = 256 << 20;

/// Estimated heap bytes of a JSON value as `serde_json` holds it (string and vector buffers,
/// B-tree nodes of maps, allocator overhead); the watch history's memory unit.
pub fn approx_heap_size(v: &Value) -> usize {
    const ALLOC: usize = 16;
    const VALUE: usize = std::mem::size_of::<Value>();
    // a B-tree node of a map holds up to 11 (String, Value) pairs
    const NODE: usize = 11 * (24 + VALUE) + 16 + ALLOC;
    match v {
        Value::String(s) => s.capacity() + ALLOC,
        Value::Array(a) => {
            a.capacity() * VALUE + ALLOC + a.iter().map(approx_heap_size).sum::<usize>()
        }
        Value::Object(m) => {
            m.len().div_ceil(11).max(1) * NODE
                + m.iter()
                    .map(|(k, v)| k.capacity() + ALLOC + approx_heap_size(v))
                    .sum::<usize>()
        }
        _ => 0,
    }
}

/// The parts of an object that bump `metadata.generation` when they change.
fn spec_part(obj: &Value) -> Value {
    match obj {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Store {
    /// A store whose watch history keeps the last `history_len` events, and at most
    /// [`HISTORY_BYTES`] of their objects.
    pub fn new(history_len: usize) -> Self {
        Self::with_history_bytes(history_len, HISTORY_BYTES)
    }

    /// As [`Store::new`], with the history's memory bound (in [`approx_heap_size`] bytes).
    pub fn with_history_bytes(history_len: usize, history_bytes: usize) -> Self {
        let (tx, _) = watch::channel(1);
        Store {
            inner: RwLock::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                uids: HashSet::new(),
                history: VecDeque::new(),
                history_sizes: VecDeque::new(),
                history_bytes: 0,
                compacted: 0,
            }),
            tx,
            changed: Notify::new(),
            history_len: history_len.max(1),
            history_bytes,
            watch_epoch: Mutex::new(CancellationToken::new()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves when something was written since the last call (the controllers' wake-up).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    /// A token cancelled when open watches must end (compaction).
    pub fn watch_epoch(&self) -> CancellationToken {
        self.watch_epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the whole event history and closes open watches, as after an etcd compaction
    /// and API server restart: every watch from an older resourceVersion gets 410 Expired.
    pub fn compact(&self) {
        {
            let mut inner = self.write();
            inner.history.clear();
            inner.history_sizes.clear();
            inner.history_bytes = 0;
            // as if one more event had been written and evicted: every watch from a
            // resourceVersion handed out so far is expired, a fresh list's is not
            inner.rv += 1;
            inner.compacted = inner.rv + 1;
        }
        let mut epoch = self.watch_epoch.lock().unwrap_or_else(|e| e.into_inner());
        epoch.cancel();
        *epoch = CancellationToken::new();
    }

    pub fn uid_exists(&self, uid: &str) -> bool {
        self.read().uids.contains(uid)
    }

    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.read()
            .objects
            .get(resource)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a resource (in one namespace when `ns` is given), ordered by key, and the
    /// resourceVersion they are consistent with.
    pub fn list(&self, resource: &str, ns: Option<&str>) -> (u64, Vec<Arc<Value>>) {
        let inner = self.read();
        (inner.rv, Self::list_locked(&inner, resource, ns))
    }

    fn list_locked(inner: &Inner, resource: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(map) = inner.objects.get(resource) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => map
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => map.values().cloned().collect(),
        }
    }

    /// Number of objects of a resource in one namespace.
    pub fn count(&self, resource: &str, ns: &str) -> usize {
        let inner = self.read();
        inner.objects.get(resource).map_or(0, |map| {
            map.range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .count()
        })
    }

    /// Resource names that currently hold objects.
    pub fn resources(&self) -> Vec<Arc<str>> {
        self.read().objects.keys().cloned().collect()
    }

    /// Lists and subscribes atomically: no event between the list and the subscription is lost.
    /// The list is consistent with the returned resourceVersion, from which the caller follows
    /// with [`Store::events_after`].
    pub fn list_and_subscribe(
        &self,
        resource: &str,
        ns: Option<&str>,
    ) -> (u64, Vec<Arc<Value>>, watch::Receiver<u64>) {
        let inner = self.read();
        let rx = self.tx.subscribe();
        (inner.rv, Self::list_locked(&inner, resource, ns), rx)
    }

    /// A receiver of the latest resourceVersion written; it changes on every write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// Events of `resource` after `rv` still in the history, the resourceVersion they are
    /// complete up to (the cursor to call again with), or `Expired` when events after `rv`
    /// were already dropped from the history.
    pub fn events_after(&self, resource: &str, rv: u64) -> Result<(Vec<Event>, u64)> {
        let inner = self.read();
        if rv + 1 < inner.compacted {
            return Err(Error::Expired {
                requested: rv,
                oldest: inner.compacted,
            });
        }
        let start = inner.history.partition_point(|e| e.rv <= rv);
        let past = inner
            .history
            .range(start..)
            .filter(|e| &*e.resource == resource)
            .cloned()
            .collect();
        Ok((past, inner.rv.max(rv)))
    }

    /// Events of `resource` after `rv` still in the history, the cursor they are complete up
    /// to, plus a live subscription.
    pub fn watch_from(
        &self,
        resource: &str,
        rv: u64,
    ) -> Result<(Vec<Event>, u64, watch::Receiver<u64>)> {
        let rx = self.tx.subscribe();
        let (past, cursor) = self.events_after(resource, rv)?;
        Ok((past, cursor, rx))
    }

    /// Oldest resourceVersion a list continuation or watch may still refer to.
    pub fn compacted_rv(&self) -> u64 {
        self.read().compacted
    }

    fn commit(
        &self,
        inner: &mut Inner,
        resource: &Arc<str>,
        key: ObjKey,
        kind: EventType,
        mut obj: Value,
    ) -> Arc<Value> {
        inner.rv += 1;
        let rv = inner.rv;
        if let Ok(meta) = metadata_mut(&mut obj) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let obj = Arc::new(obj);
        let map = inner.objects.entry(resource.clone()).or_default();
        let prev = if kind == EventType::Deleted {
            let prev = map.remove(&key);
            inner.uids.remove(uid_of(&obj));
            prev
        } else {
            let prev = map.insert(key, obj.clone());
            inner.uids.insert(uid_of(&obj).to_string());
            prev
        };
        let event = Event {
            rv,
            resource: resource.clone(),
            kind,
            object: obj.clone(),
            prev,
        };
        let size = approx_heap_size(&event.object);
        inner.history.push_back(event);
        inner.history_sizes.push_back(size);
        inner.history_bytes += size;
        // bounded by count and by memory; the newest event always stays
        while inner.history.len() > self.history_len
            || (inner.history_bytes > self.history_bytes && inner.history.len() > 1)
        {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv + 1;
            }
            let freed = inner.history_sizes.pop_front().unwrap_or(0);
            inner.history_bytes = inner.history_bytes.saturating_sub(freed);
        }
        self.tx.send_replace(rv);
        self.changed.notify_one();
        obj
    }

    /// Stores a new object: fills uid, creationTimestamp, generation and resourceVersion.
    pub fn create(&self, resource: &Arc<str>, mut obj: Value) -> Result<Arc<Value>> {
        let ns = namespace_of(&obj).to_string();
        let name = name_of(&obj).to_string();
        if name.is_empty() {
            return Err(Error::Invalid(format!(
                "{resource}: metadata.name: Required value: name or generateName is required"
            )));
        }
        let meta = metadata_mut(&mut obj)?;
        meta.insert("uid".into(), Value::String(new_uid()));
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        let mut inner = self.write();
        let key = (ns, name.clone());
        if inner
            .objects
            .get(resource)
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(Error::AlreadyExists {
                resource: resource.to_string(),
                name,
            });
        }
        Ok(self.commit(&mut inner, resource, key, EventType::Added, obj))
    }

    /// Read-modify-write of one object under the store lock. `f` returns the new object (or an
    /// error); `uid`, `creationTimestamp` and `deletionTimestamp` are kept, `generation` bumps
    /// when anything outside metadata/status changed. A deleting object whose last finalizer
    /// was removed disappears. Returns the stored object, or `None` when it was removed. When
    /// nothing changed, nothing is written.
    pub fn modify<F>(
        &self,
        resource: &Arc<str>,
        ns: &str,
        name: &str,
        f: F,
    ) -> Result<Option<Arc<Value>>>
    where
        F: FnOnce(&Value) -> Result<Value>,
    {
        let mut inner = self.write();
        let key = (ns.to_string(), name.to_string());
        let cur = inner.current(resource, &key)?;
        let mut new = f(&cur)?;
        {
            let meta = metadata_mut(&mut new)?;
            for field in [
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match cur.get("metadata").and_then(|m| m.get(field)) {
                    Some(v) if !v.is_null() => {
                        meta.insert(field.into(), v.clone());
                    }
                    // a deletionTimestamp can only be set through `delete`
                    _ => {
                        meta.remove(field);
                    }
                }
            }
            meta.insert(
                "resourceVersion".into(),
                cur.pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            let generation = cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta.insert("generation".into(), json!(generation));
        }
        if spec_part(&new) != spec_part(&cur) {
            let generation = cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if let Ok(meta) = metadata_mut(&mut new) {
                meta.insert("generation".into(), json!(generation + 1));
            }
        }
        if new == *cur {
            return Ok(Some(cur));
        }
        if is_deleting(&new) && finalizers_of(&new).is_empty() {
            self.commit(&mut inner, resource, key, EventType::Deleted, new);
            return Ok(None);
        }
        Ok(Some(self.commit(
            &mut inner,
            resource,
            key,
            EventType::Modified,
            new,
        )))
    }

    /// Deletes an object: with finalizers it only gets a `deletionTimestamp` (the returned
    /// object is still stored); without, it is removed. `extra_finalizer` (`foregroundDeletion`,
    /// `orphan`) is added first. Returns the object and whether it was removed.
    pub fn delete(
        &self,
        resource: &Arc<str>,
        ns: &str,
        name: &str,
        extra_finalizer: Option<&str>,
        precondition_uid: Option<&str>,
        precondition_rv: Option<u64>,
    ) -> Result<(Arc<Value>, bool)> {
        let mut inner = self.write();
        let key = (ns.to_string(), name.to_string());
        let cur = inner.current(resource, &key)?;
        if precondition_uid.is_some_and(|u| u != uid_of(&cur)) {
            return Err(Error::Conflict {
                resource: resource.to_string(),
                name: name.to_string(),
                reason: "the UID in the precondition does not match the UID in record".into(),
            });
        }
        if precondition_rv.is_some_and(|rv| rv != rv_of(&cur)) {
            return Err(Error::Conflict {
                resource: resource.to_string(),
                name: name.to_string(),
                reason: "the ResourceVersion in the precondition does not match the ResourceVersion in record".into(),
            });
        }
        let mut obj = (*cur).clone();
        let mut finalizers = finalizers_of(&obj);
        if let Some(f) = extra_finalizer {
            if !finalizers.iter().any(|x| x == f) && !is_deleting(&obj) {
                finalizers.push(f.to_string());
            }
        }
        if finalizers.is_empty() {
            let obj = self.commit(&mut inner, resource, key, EventType::Deleted, obj);
            return Ok((obj, true));
        }
        if is_deleting(&cur) && extra_finalizer.is_none() {
            return Ok((cur, false));
        }
        let meta = metadata_mut(&mut obj)?;
        meta.insert("finalizers".into(), json!(finalizers));
        if meta.get("deletionTimestamp").is_none_or(|v| v.is_null()) {
            meta.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        let obj = self.commit(&mut inner, resource, key, EventType::Modified, obj);
        Ok((obj, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str, data: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "data": {"k": data}})
    }

    #[test]
    fn history_is_bounded_by_memory_as_well_as_by_count() {
        let one = approx_heap_size(&cm("a", &"x".repeat(1000)));
        assert!(one > 1000);
        let store = Store::with_history_bytes(10_000, 3 * one + one / 2);
        let key: Arc<str> = Arc::from(keys::CONFIGMAPS);
        let first = store.current_rv();
        for i in 0..10 {
            store
                .create(&key, cm(&format!("c{i}"), &"x".repeat(1000)))
                .expect("create");
        }
        // only the last three fit: a watch from before them is expired, one from the
        // seventh create replays the last three
        assert!(matches!(
            store.watch_from(keys::CONFIGMAPS, first),
            Err(Error::Expired { .. })
        ));
        let (past, cursor, _) = store
            .watch_from(keys::CONFIGMAPS, first + 7)
            .expect("within the history");
        assert_eq!(past.len(), 3);
        assert_eq!(cursor, store.current_rv());
        // the count bound still applies
        let store = Store::new(2);
        for i in 0..3 {
            store
                .create(&key, cm(&format!("c{i}"), ""))
                .expect("create");
        }
        assert!(store.watch_from(keys::CONFIGMAPS, 1).is_err());
    }

    #[tokio::test]
    async fn a_watch_follows_the_history_from_its_cursor() {
        let store = Store::new(3);
        let cms: Arc<str> = Arc::from(keys::CONFIGMAPS);
        let secrets: Arc<str> = Arc::from(keys::SECRETS);
        let (rv, items, mut live) = store.list_and_subscribe(keys::SECRETS, None);
        assert!(items.is_empty());
        // other resources churn past the history's length: a watch that keeps up with the
        // notifications never falls out of the history
        let mut cursor = rv;
        for i in 0..10 {
            store
                .create(&cms, cm(&format!("c{i}"), ""))
                .expect("create");
            live.changed().await.expect("notified");
            let (evs, c) = store.events_after(keys::SECRETS, cursor).expect("kept up");
            assert!(evs.is_empty());
            cursor = c;
        }
        store.create(&secrets, cm("s", "")).expect("create");
        live.changed().await.expect("notified");
        let (evs, c) = store.events_after(keys::SECRETS, cursor).expect("kept up");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, EventType::Added);
        assert_eq!(c, store.current_rv());
        // one that stopped reading for longer than the history is expired
        assert!(matches!(
            store.events_after(keys::SECRETS, rv),
            Err(Error::Expired { .. })
        ));
    }
}
