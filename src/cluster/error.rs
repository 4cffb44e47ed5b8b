//! Classification of Kubernetes API errors for the engine: transient (worth retrying by the
//! step's policy) or permanent (fail fast with the server's message), with the server's
//! `Retry-After` when it sent one.

use std::time::Duration;

/// How a failed API call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retrying may help (connection errors, timeouts, 5xx, 429, 409 Conflict, 410 Expired).
    Transient { retry_after: Option<Duration> },
    /// Retrying cannot help (400, 401, 403, 404, 422, ...): the message says what to fix.
    Permanent,
}

impl Class {
    pub fn is_transient(self) -> bool {
        matches!(self, Class::Transient { .. })
    }
}

/// HTTP status codes whose failures are worth retrying.
pub fn transient_status(code: u16) -> bool {
    matches!(code, 408 | 409 | 410 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// Classifies a kube-rs error. Everything that did not get an answer from the API server
/// (connect, TLS handshake, reset, timeout, a body that ended early) is transient; answers are
/// classified by their status code. A 409 `AlreadyExists` is permanent here: callers that
/// create idempotently handle it before classifying.
pub fn classify(e: &kube::Error) -> Class {
    match e {
        kube::Error::Api(status) => {
            if status.reason == "AlreadyExists" {
                return Class::Permanent;
            }
            if transient_status(status.code) {
                Class::Transient {
                    retry_after: retry_after_of(status),
                }
            } else {
                Class::Permanent
            }
        }
        // Client-side problems with our own request or the kubeconfig.
        kube::Error::BuildRequest(_)
        | kube::Error::InferConfig(_)
        | kube::Error::Discovery(_)
        | kube::Error::SerdeError(_)
        | kube::Error::LinesCodecMaxLineLengthExceeded => Class::Permanent,
        kube::Error::Auth(_) | kube::Error::InferKubeconfig(_) => Class::Permanent,
        // Connection, TLS, upgrade, service and body errors: the network or the server.
        _ => Class::Transient { retry_after: None },
    }
}

/// The server's suggested delay (`details.retryAfterSeconds` of a 429/503/504 Status).
fn retry_after_of(status: &kube::core::Status) -> Option<Duration> {
    status
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)))
}

/// Whether `e` is the API server's 404 NotFound.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether `e` is the API server's 409 AlreadyExists.
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// The server's message for an API error, else the error's own text.
pub fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", s.reason)
            };
            format!("{}{reason}: {}", s.code, s.message)
        }
        other => {
            let mut m = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                m.push_str(": ");
                m.push_str(&s.to_string());
                src = s.source();
            }
            m
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("m", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn status_codes_are_classified() {
        for code in [408, 409, 410, 429, 500, 502, 503, 504] {
            assert!(classify(&api(code, "X")).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 405, 415, 422] {
            assert!(!classify(&api(code, "X")).is_transient(), "{code}");
        }
        assert!(!classify(&api(409, "AlreadyExists")).is_transient());
        assert!(is_already_exists(&api(409, "AlreadyExists")));
        assert!(!is_already_exists(&api(409, "Conflict")));
        assert!(is_not_found(&api(404, "NotFound")));
        assert_eq!(message(&api(403, "Forbidden")), "403 Forbidden: m");
    }
}
