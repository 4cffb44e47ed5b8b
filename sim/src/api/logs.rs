//! `GET .../pods/{name}/log`: the lines the kubelet stand-in gives a container
//! ([`crate::controllers::kubelet::pod_log`]), `tailLines`, and `follow=true`, which keeps the
//! response open and sends each new line as the container's state advances, ending when the
//! container has terminated (or the pod is gone), as a real kubelet's log stream does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Response;

use super::{full, get_object, ApiError, App, Body, Target};
use crate::controllers::kubelet;
use crate::selector::parse_bool;
use crate::store::keys;

/// How often a follower looks at the pod again.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

fn text_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn joined(lines: &[String]) -> Bytes {
    Bytes::from(lines.iter().map(|l| format!("{l}\n")).collect::<String>())
}

pub async fn pod_log(
    app: &Arc<App>,
    t: &Target,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let pod = get_object(app, t)?;
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let container = param("container");
    let mut lines = kubelet::pod_log(&pod, container.as_deref()).map_err(ApiError::bad_request)?;
    let total = lines.len();
    if let Some(n) = param("tailLines").and_then(|v| v.parse::<usize>().ok()) {
        lines.drain(..lines.len().saturating_sub(n));
    }
    let follow = param("follow").and_then(|v| parse_bool(&v)) == Some(true);
    if !follow || kubelet::log_ended(&pod, container.as_deref()) {
        return Ok(text_response(full(joined(&lines))));
    }
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let (app, ns, name) = (
        app.clone(),
        t.ns.clone().unwrap_or_default(),
        t.name.clone().unwrap_or_default(),
    );
    let uid = crate::store::uid_of(&pod).to_string();
    tokio::spawn(async move {
        use futures::SinkExt;
        if !lines.is_empty() && tx.send(Ok(Frame::data(joined(&lines)))).await.is_err() {
            return;
        }
        let mut sent = total;
        loop {
            tokio::select! {
                _ = app.shutdown.cancelled() => return,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
            let Some(pod) = app
                .store
                .get(keys::PODS, &ns, &name)
                .filter(|p| crate::store::uid_of(p) == uid)
            else {
                return;
            };
            let Ok(now) = kubelet::pod_log(&pod, container.as_deref()) else {
                return;
            };
            if now.len() > sent {
                if tx
                    .send(Ok(Frame::data(joined(&now[sent..]))))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = now.len();
            }
            if kubelet::log_ended(&pod, container.as_deref()) {
                return;
            }
        }
    });
    Ok(text_response(StreamBody::new(rx).boxed()))
}
