//! Watch: a chunked HTTP 200 stream of newline-delimited `WatchEvent`s. Starts with ADDED for
//! every object when no resourceVersion (or `0`) is given, otherwise replays the history after
//! it; a too-old resourceVersion gets an `ERROR` event with a 410 `Expired` Status (never an
//! HTTP 410, which kube-runtime would not relist on). Bookmarks every few seconds when asked
//! for; the stream ends after `timeoutSeconds`, at shutdown, or when the store is compacted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Response;
use serde_json::{json, Value};

use super::{ApiError, App, Body, Query, Target};
use crate::store::{self, Event, EventType};

const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

type Tx = futures::channel::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

async fn send(tx: &mut Tx, bytes: Bytes) -> bool {
    tx.send(Ok(Frame::data(bytes))).await.is_ok()
}

/// How an event looks through the watch's selectors: an object that starts matching is
/// ADDED, one that stops matching is DELETED, as on a real API server.
fn visible(ev: &Event, matches: &impl Fn(&Value) -> bool) -> Option<&'static str> {
    let now = matches(&ev.object);
    match ev.kind {
        EventType::Modified => {
            let before = ev.prev.as_deref().is_some_and(matches);
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
        kind => now.then_some(kind.as_str()),
    }
}

pub fn watch(app: Arc<App>, t: Target, q: Query) -> Result<Response<Body>, ApiError> {
    let (ls, fs) = q.selectors()?;
    let requested: Option<u64> = match q.resource_version.as_deref() {
        None | Some("0") => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let (mut tx, rx) = futures::channel::mpsc::channel(256);
    let api_version = t.api_version();
    let epoch = app.store.watch_epoch();
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(1800).max(1));
    tokio::spawn(async move {
        let matches = |obj: &Value| {
            (t.ns.is_none() || store::namespace_of(obj) == t.ns.as_deref().unwrap_or(""))
                && ls.matches(obj)
                && fs.matches(obj)
        };
        let mut first = true;
        let mut out = |obj: &Arc<Value>| -> Value {
            let mut o = (**obj).clone();
            o["apiVersion"] = json!(api_version);
            if q.table {
                let with_columns = std::mem::replace(&mut first, false);
                return super::table::table(&t.rt, [&o], json!({}), q.include_object, with_columns);
            }
            o
        };
        let (mut last_rv, mut cursor, initial, mut live) = match requested {
            None => {
                let (rv, items, live) = app.store.list_and_subscribe(&t.rt.key, t.ns.as_deref());
                let initial: Vec<Event> = items
                    .into_iter()
                    .map(|o| Event {
                        rv: store::rv_of(&o),
                        resource: t.rt.key.clone(),
                        kind: EventType::Added,
                        object: o,
                        prev: None,
                    })
                    .collect();
                (rv, rv, initial, live)
            }
            Some(rv) => match app.store.watch_from(&t.rt.key, rv) {
                Ok((past, cursor, live)) => (rv, cursor, past, live),
                Err(e) => {
                    let status = ApiError::new(410, "Expired", e.to_string()).to_status();
                    let _ = send(&mut tx, line("ERROR", &status)).await;
                    return;
                }
            },
        };
        for ev in initial {
            last_rv = last_rv.max(ev.rv);
            if let Some(kind) = visible(&ev, &matches) {
                if !send(&mut tx, line(kind, &out(&ev.object))).await {
                    return;
                }
            }
        }
        if q.send_initial_events && requested.is_none() {
            let bm = json!({"kind": t.rt.kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if !send(&mut tx, line("BOOKMARK", &bm)).await {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(BOOKMARK_EVERY);
        bookmarks.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = epoch.cancelled() => return,
                _ = app.shutdown.cancelled() => return,
                _ = bookmarks.tick() => {
                    // the client went away: stop watching
                    if tx.is_closed() { return; }
                    if q.allow_bookmarks {
                        let bm = json!({"kind": t.rt.kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_rv.to_string()}});
                        if !send(&mut tx, line("BOOKMARK", &bm)).await { return; }
                    }
                }
                changed = live.changed() => {
                    if changed.is_err() { return; }
                    // the events after this watch's cursor, from the store's history
                    let evs = match app.store.events_after(&t.rt.key, cursor) {
                        Ok((evs, c)) => { cursor = c; evs }
                        Err(_) => {
                            let status = ApiError::new(410, "Expired", "the watch fell behind; relist").to_status();
                            let _ = send(&mut tx, line("ERROR", &status)).await;
                            return;
                        }
                    };
                    for ev in evs {
                        if ev.rv <= last_rv { continue; }
                        last_rv = ev.rv;
                        if let Some(kind) = visible(&ev, &matches) {
                            if !send(&mut tx, line(kind, &out(&ev.object))).await {
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(rx).boxed());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
