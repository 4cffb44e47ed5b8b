//! The websocket upgrade as the Kubernetes API server does it for exec and port-forward:
//! subprotocol negotiation (`v5.channel.k8s.io` / `v4.channel.k8s.io`), the 101 answer, and
//! `Status` error answers for requests that cannot be upgraded.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

pub(crate) const V5: &str = "v5.channel.k8s.io";
pub(crate) const V4: &str = "v4.channel.k8s.io";

/// A plain (non-streaming) HTTP answer.
pub(crate) type Reply = Response<Full<Bytes>>;

pub(crate) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A Kubernetes `Status` failure answer.
pub(crate) fn status(code: u16, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Check the upgrade request and pick the subprotocol among `supported` (in order of
/// preference); on success returns the 101 answer to send.
pub(crate) fn accept(
    req: &Request<Incoming>,
    supported: &[&'static str],
) -> Result<(Reply, &'static str), Box<Reply>> {
    let is_upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(status(400, "BadRequest", "Upgrade request required: this endpoint only speaks websocket (missing Sec-WebSocket-Key)")));
    };
    if !is_upgrade {
        return Err(Box::new(status(
            400,
            "BadRequest",
            "Upgrade request required: missing 'Upgrade: websocket'",
        )));
    }
    let (offered, chosen) = negotiate(req, SEC_WEBSOCKET_PROTOCOL.as_str(), supported);
    let Some(proto) = chosen else {
        return Err(Box::new(status(
            400,
            "BadRequest",
            &format!("unsupported websocket subprotocols {offered:?}; supported: {supported:?}"),
        )));
    };
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(proto));
    Ok((r, proto))
}

/// The protocols a client offers in `header` (repeated or comma-separated) and the first of
/// `supported` among them.
pub(crate) fn negotiate(
    req: &Request<Incoming>,
    header: &str,
    supported: &[&'static str],
) -> (Vec<String>, Option<&'static str>) {
    let offered: Vec<String> = req
        .headers()
        .get_all(header)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let chosen = supported
        .iter()
        .copied()
        .find(|s| offered.iter().any(|o| o == s));
    (offered, chosen)
}

/// Finish the upgrade (after the 101 was sent) and wrap the connection as a server websocket.
pub(crate) async fn upgrade(req: Request<Incoming>) -> Result<Ws, hyper::Error> {
    let upgraded = hyper::upgrade::on(req).await?;
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(64 << 20);
    config.max_frame_size = Some(64 << 20);
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await)
}

/// Query parameters as (key, value) pairs, percent-decoded.
pub(crate) fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    let q = req.uri().query().unwrap_or("");
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A close frame with code 1000: Go clients (kubectl) treat a close without a status (1005)
/// as an error on the stream they are reading.
pub(crate) fn normal_close() -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    tokio_tungstenite::tungstenite::Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}
