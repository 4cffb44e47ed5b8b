//! Step errors: what one attempt's failure is ([`StepError`]: journaled, so data, not a Rust
//! type) and how the engine treats it ([`ErrorKind`]: transient, permanent, cancelled).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How an error should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Worth retrying (connection reset, 5xx, 429, 409 on update, watch 410, timeout).
    Transient,
    /// Retrying cannot help (validation, 403, misconfiguration): fail fast.
    Permanent,
    /// The step stopped because the run was cancelled; not recorded, re-run on resume.
    Cancelled,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

/// The error of one attempt; journaled, so it is data (the rendered chain), not a Rust type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
    /// A server-provided delay (e.g. HTTP `Retry-After`) before the next attempt.
    pub retry_after_ms: Option<u64>,
}

impl StepError {
    pub fn transient(message: impl Into<String>) -> StepError {
        StepError {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after_ms: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> StepError {
        StepError {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after_ms: None,
        }
    }
    pub fn cancelled() -> StepError {
        StepError {
            kind: ErrorKind::Cancelled,
            message: "cancelled".into(),
            retry_after_ms: None,
        }
    }
    /// Asks for at least `delay` before the next attempt.
    pub fn retry_after(mut self, delay: Duration) -> StepError {
        self.retry_after_ms = Some(delay.as_millis() as u64);
        self
    }
    /// Renders an error and its sources as one message.
    pub fn from_chain(kind: ErrorKind, err: &(dyn std::error::Error + 'static)) -> StepError {
        let mut message = err.to_string();
        let mut src = err.source();
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        StepError {
            kind,
            message,
            retry_after_ms: None,
        }
    }
}
