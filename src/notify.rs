//! Campaign notifications: one JSON event POSTed to a webhook (`--notify URL` or
//! `VAST_NOTIFY_URL`) when a campaign ends, fails or stalls, and as a heartbeat. The body is
//! a generic webhook event; ntfy reads the same request (its `Title`, `Tags` and `X-Priority`
//! headers and the body as the message text are what ntfy shows), so one URL format serves
//! both.
//!
//! Delivery is best effort and bounded: at most [`ATTEMPTS`] tries of [`TIMEOUT`] each; a
//! notification that cannot be delivered is logged (without the URL, which may carry a
//! token) and never fails the campaign. The URL is never stored in the run's state: a resume
//! reads it again from the environment (or `.env`).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde::Serialize;

/// Tries per event.
pub const ATTEMPTS: u32 = 3;
/// Limit of one try (connect, send, answer).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable naming the webhook.
pub const ENV: &str = "VAST_NOTIFY_URL";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The campaign ended (its outcome says how).
    Ended,
    /// The campaign stopped with an error (resumable with `vast resume`).
    Failed,
    /// Nothing started or finished for the stall timeout.
    Stalled,
    /// Still running: the counts so far.
    Heartbeat,
}

/// One event, as POSTed (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `vast.campaign.<kind>`.
    pub event: String,
    pub kind: EventKind,
    pub run_id: String,
    /// `succeeded`, `succeeded_with_failures`, `failed`, `stalled`, `running`.
    pub outcome: String,
    pub counts: Counts,
    pub message: String,
    /// Unique per event of a run (`<run id>:<kind>[:<n>]`): a receiver that sees it twice
    /// (a crash between sending and recording it) can drop the copy.
    pub id: String,
    /// RFC 3339.
    pub time: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub lost: usize,
    pub running: usize,
}

impl Event {
    pub fn new(
        kind: EventKind,
        run_id: &str,
        outcome: &str,
        counts: Counts,
        message: String,
    ) -> Self {
        let k = match kind {
            EventKind::Ended => "ended",
            EventKind::Failed => "failed",
            EventKind::Stalled => "stalled",
            EventKind::Heartbeat => "heartbeat",
        };
        let time = jiff::Timestamp::now().to_string();
        let id = match kind {
            EventKind::Heartbeat | EventKind::Stalled => format!("{run_id}:{k}:{time}"),
            _ => format!("{run_id}:{k}"),
        };
        Event {
            event: format!("vast.campaign.{k}"),
            kind,
            run_id: run_id.to_string(),
            outcome: outcome.to_string(),
            counts,
            message,
            id,
            time,
        }
    }
}

/// The webhook from `--notify` (`explicit`), else `VAST_NOTIFY_URL`; `None` when neither is
/// set. An URL that is not http(s) is an error naming the variable.
pub fn url_from(explicit: Option<&str>) -> Result<Option<String>, String> {
    let v = match explicit {
        Some(u) => Some(u.to_string()),
        None => std::env::var(ENV).ok().filter(|s| !s.trim().is_empty()),
    };
    match v {
        None => Ok(None),
        Some(u) => {
            let parsed = url::Url::parse(u.trim())
                .map_err(|e| format!("notification URL ({} or --notify) is not a URL: {e}", ENV))?;
            if parsed.scheme() != "http" && parsed.scheme() != "https" {
                return Err(format!(
                    "notification URL ({ENV} or --notify) must be http or https, not '{}'",
                    parsed.scheme()
                ));
            }
            Ok(Some(u.trim().to_string()))
        }
    }
}

/// The URL as it may be logged: scheme and host only.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "(invalid URL)".into(),
    }
}

/// POSTs `event` to `url`: bounded tries, never an error (a failure is logged). Returns
/// whether it was delivered (a 2xx answer).
pub async fn send(url: &str, event: &Event) -> bool {
    let body = match serde_json::to_vec(event) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("notification not sent: {e}");
            return false;
        }
    };
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(TIMEOUT, post(url, event, body.clone())).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                tracing::debug!(
                    "notification {} delivered to {}",
                    event.event,
                    redacted(url)
                );
                return true;
            }
            Ok(Ok(status)) => last = format!("answered HTTP {status}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {} s", TIMEOUT.as_secs()),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
    }
    tracing::warn!(
        "notification {} to {} not delivered after {ATTEMPTS} tries: {last} (the campaign goes on)",
        event.event,
        redacted(url)
    );
    false
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<bytes::Bytes>,
>;

/// One client per process: the system's TLS roots are read once, not per event.
fn client() -> Result<&'static HttpClient, String> {
    static CLIENT: std::sync::OnceLock<Result<HttpClient, String>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| format!("no TLS roots: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            Ok(
                // No idle connections kept: events are minutes apart, and a pooled
                // connection must never outlive the runtime that opened it.
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build(https),
            )
        })
        .as_ref()
        .map_err(Clone::clone)
}

async fn post(url: &str, event: &Event, body: Vec<u8>) -> Result<u16, String> {
    let client = client()?;
    let title = format!("vast {}: {}", event.run_id, event.outcome);
    let (tags, priority) = match event.kind {
        EventKind::Ended if event.outcome == "succeeded" => ("white_check_mark", "3"),
        EventKind::Ended => ("warning", "4"),
        EventKind::Failed | EventKind::Stalled => ("rotating_light", "5"),
        EventKind::Heartbeat => ("hourglass", "2"),
    };
    let req = Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("vast/", env!("CARGO_PKG_VERSION")))
        .header("Title", title)
        .header("Tags", tags)
        .header("X-Priority", priority)
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("cannot reach the receiver: {e}"))?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}
