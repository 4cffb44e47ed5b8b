//! Fault injection, deterministic with a seed.
//!
//! INTERFACE CONTRACT (fixed; the body is owned by the data-plane work): the API router calls
//! [`Faults::api_fault`] once per request before handling it and applies the answer; the admin
//! endpoint `PUT /sim/faults` calls [`Faults::set`]; `GET /sim/faults` returns [`Faults::get`].

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The fault configuration (config file, `VAST_SIM_FAULTS` env as JSON, or admin endpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    pub seed: u64,
}

/// What the API layer must do with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiFault {
    /// Answer with this status code (and `Retry-After` seconds for 429/503 when set).
    Status { code: u16, retry_after: Option<u64> },
    /// Drop the connection without an answer.
    Reset,
    /// Wait this long, then handle the request normally.
    Latency(Duration),
}

pub struct Faults {
    config: Mutex<FaultConfig>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Faults { config: Mutex::new(config) }
    }
    pub fn set(&self, config: FaultConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }
    pub fn get(&self) -> FaultConfig {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// `verb`: get, list, watch, create, update, patch, delete, deletecollection, exec,
    /// portforward; `resource`: plural resource name (`jobs`, `pods`, ...).
    pub fn api_fault(&self, _verb: &str, _resource: &str) -> Option<ApiFault> {
        None
    }
}
