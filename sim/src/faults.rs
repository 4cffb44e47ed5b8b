//! Fault injection, deterministic with a seed.
//!
//! INTERFACE CONTRACT (fixed; the body is owned by the data-plane work): the API router calls
//! [`Faults::api_fault`] once per request before handling it and applies the answer; the admin
//! endpoint `PUT /sim/faults` calls [`Faults::set`]; `GET /sim/faults` returns [`Faults::get`].
//!
//! Every decision draws from one seeded random generator (re-seeded by [`Faults::set`]), so the
//! same configuration and the same sequence of requests give the same faults. Rules fire with a
//! probability (`rate`) and at most `max_hits` times, so a test can ask for "exactly the next two
//! `create jobs` answer 429". See `sim/docs/dataplane.md` for the reference.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The fault configuration (config file, `VAST_SIM_FAULTS` env as JSON, or admin endpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    pub seed: u64,
    /// API request faults, evaluated in order; the first rule that fires decides.
    pub api: Vec<ApiFaultRule>,
    /// Port-forward stream faults.
    pub portforward: PortForwardFaults,
    /// S3 endpoint faults, evaluated in order; the first rule that fires decides.
    pub s3: Vec<S3FaultRule>,
}

/// One API fault rule: which requests it matches, how often it fires, what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFaultRule {
    /// Verbs matched (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `exec`, `portforward`); empty or `*` = all.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Plural resource names matched (`jobs`, `pods`, ...); empty or `*` = all.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Probability in `[0, 1]` that a matching request gets the fault (default 1).
    #[serde(default = "one")]
    pub rate: f64,
    /// Fire at most this many times (default: unlimited).
    #[serde(default)]
    pub max_hits: Option<u64>,
    pub action: ApiFaultAction,
}

/// What a fired API rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiFaultAction {
    /// Answer with one of `codes` (chosen by the seeded generator); 429 and 503 carry
    /// `Retry-After: retry_after_seconds` (default 1).
    Status {
        codes: Vec<u16>,
        #[serde(default)]
        retry_after_seconds: Option<u64>,
    },
    /// Close the connection without an answer.
    Reset,
    /// Delay the request by `ms` milliseconds, then handle it normally.
    Latency { ms: u64 },
}

/// Port-forward faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortForwardFaults {
    /// Drop the whole port-forward websocket after this many payload bytes (both directions
    /// counted) have passed through one stream.
    pub drop_after_bytes: Option<u64>,
    /// Only streams to these container ports are dropped; empty = all.
    pub ports: Vec<u16>,
    /// Drop at most this many streams (default: unlimited).
    pub max_hits: Option<u64>,
}

/// One S3 fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3FaultRule {
    /// S3 operations matched (`GetObject`, `PutObject`, `HeadObject`, `ListObjectsV2`,
    /// `UploadPart`, ...); empty or `*` = all.
    #[serde(default)]
    pub ops: Vec<String>,
    /// Probability in `[0, 1]` (default 1).
    #[serde(default = "one")]
    pub rate: f64,
    /// Fire at most this many times (default: unlimited).
    #[serde(default)]
    pub max_hits: Option<u64>,
    /// HTTP status codes to answer with (500 `InternalError`, 503 `SlowDown`, 403
    /// `AccessDenied`, 404 `NoSuchKey`, others `InternalError`); default `[500]`.
    #[serde(default = "default_s3_codes")]
    pub codes: Vec<u16>,
    /// Added latency in milliseconds instead of an error when set (and `codes` is ignored).
    #[serde(default)]
    pub latency_ms: Option<u64>,
}

fn one() -> f64 {
    1.0
}

fn default_s3_codes() -> Vec<u16> {
    vec![500]
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

/// What the S3 endpoint must do with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Fault {
    /// Answer with this HTTP status and S3 error code.
    Error { status: u16, code: &'static str },
    /// Wait this long, then handle the request normally.
    Latency(Duration),
}

struct State {
    config: FaultConfig,
    rng: StdRng,
    api_hits: Vec<u64>,
    s3_hits: Vec<u64>,
    pf_hits: u64,
}

impl State {
    fn new(config: FaultConfig) -> Self {
        State {
            rng: StdRng::seed_from_u64(config.seed),
            api_hits: vec![0; config.api.len()],
            s3_hits: vec![0; config.s3.len()],
            pf_hits: 0,
            config,
        }
    }
}

pub struct Faults {
    state: Mutex<State>,
}

fn matches(list: &[String], value: &str) -> bool {
    list.is_empty()
        || list
            .iter()
            .any(|v| v == "*" || v.eq_ignore_ascii_case(value))
}

/// Draw once from `rng` for a rule of probability `rate` (rates of 1 and 0 draw nothing, so
/// adding a certain rule does not shift the sequence of the random ones).
fn fires(rng: &mut StdRng, rate: f64) -> bool {
    if rate >= 1.0 {
        true
    } else if rate <= 0.0 || rate.is_nan() {
        false
    } else {
        rng.random::<f64>() < rate
    }
}

fn s3_error_code(status: u16) -> &'static str {
    match status {
        503 => "SlowDown",
        403 => "AccessDenied",
        404 => "NoSuchKey",
        400 => "BadRequest",
        _ => "InternalError",
    }
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Faults {
            state: Mutex::new(State::new(config)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the configuration; re-seeds the generator and resets the hit counters.
    pub fn set(&self, config: FaultConfig) {
        *self.lock() = State::new(config);
    }

    pub fn get(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    /// `verb`: get, list, watch, create, update, patch, delete, deletecollection, exec,
    /// portforward; `resource`: plural resource name (`jobs`, `pods`, ...).
    pub fn api_fault(&self, verb: &str, resource: &str) -> Option<ApiFault> {
        let mut st = self.lock();
        let st = &mut *st;
        for (i, rule) in st.config.api.iter().enumerate() {
            if !matches(&rule.verbs, verb) || !matches(&rule.resources, resource) {
                continue;
            }
            if rule.max_hits.is_some_and(|max| st.api_hits[i] >= max) {
                continue;
            }
            if !fires(&mut st.rng, rule.rate) {
                continue;
            }
            st.api_hits[i] += 1;
            return Some(match &rule.action {
                ApiFaultAction::Status {
                    codes,
                    retry_after_seconds,
                } => {
                    let code = pick(&mut st.rng, codes).unwrap_or(500);
                    let retry_after = if code == 429 || code == 503 {
                        Some(retry_after_seconds.unwrap_or(1))
                    } else {
                        None
                    };
                    ApiFault::Status { code, retry_after }
                }
                ApiFaultAction::Reset => ApiFault::Reset,
                ApiFaultAction::Latency { ms } => ApiFault::Latency(Duration::from_millis(*ms)),
            });
        }
        None
    }

    /// Fault for one S3 request of operation `op` (e.g. `GetObject`).
    pub fn s3_fault(&self, op: &str) -> Option<S3Fault> {
        let mut st = self.lock();
        let st = &mut *st;
        for (i, rule) in st.config.s3.iter().enumerate() {
            if !matches(&rule.ops, op) || rule.max_hits.is_some_and(|max| st.s3_hits[i] >= max) {
                continue;
            }
            if !fires(&mut st.rng, rule.rate) {
                continue;
            }
            st.s3_hits[i] += 1;
            if let Some(ms) = rule.latency_ms {
                return Some(S3Fault::Latency(Duration::from_millis(ms)));
            }
            let status = pick(&mut st.rng, &rule.codes).unwrap_or(500);
            return Some(S3Fault::Error {
                status,
                code: s3_error_code(status),
            });
        }
        None
    }

    /// For a new port-forward stream to container port `port`: the byte budget after which
    /// the stream is dropped, if any. Counts against `max_hits` when it returns `Some`.
    pub fn portforward_budget(&self, port: u16) -> Option<u64> {
        let mut st = self.lock();
        let pf = &st.config.portforward;
        let limit = pf.drop_after_bytes?;
        if !(pf.ports.is_empty() || pf.ports.contains(&port)) {
            return None;
        }
        if pf.max_hits.is_some_and(|max| st.pf_hits >= max) {
            return None;
        }
        st.pf_hits += 1;
        Some(limit)
    }
}

fn pick(rng: &mut StdRng, codes: &[u16]) -> Option<u16> {
    match codes.len() {
        0 => None,
        1 => Some(codes[0]),
        n => Some(codes[rng.random_range(0..n)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_rule(verbs: &[&str], resources: &[&str], rate: f64, codes: &[u16]) -> ApiFaultRule {
        ApiFaultRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            rate,
            max_hits: None,
            action: ApiFaultAction::Status {
                codes: codes.to_vec(),
                retry_after_seconds: Some(3),
            },
        }
    }

    #[test]
    fn same_seed_same_faults() {
        let cfg = FaultConfig {
            seed: 42,
            api: vec![status_rule(&["create"], &["jobs"], 0.3, &[429, 500, 503])],
            ..Default::default()
        };
        let run = |f: &Faults| {
            (0..200)
                .map(|_| f.api_fault("create", "jobs"))
                .collect::<Vec<_>>()
        };
        let a = run(&Faults::new(cfg.clone()));
        let b = run(&Faults::new(cfg.clone()));
        assert_eq!(a, b);
        let hits = a.iter().filter(|x| x.is_some()).count();
        assert!(hits > 20 && hits < 120, "rate 0.3 of 200 gave {hits}");
        // 429 and 503 carry Retry-After, 500 does not.
        for f in a.into_iter().flatten() {
            match f {
                ApiFault::Status {
                    code: 500,
                    retry_after,
                } => assert_eq!(retry_after, None),
                ApiFault::Status { retry_after, .. } => assert_eq!(retry_after, Some(3)),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Another seed gives another sequence.
        let c = run(&Faults::new(FaultConfig { seed: 43, ..cfg }));
        assert_ne!(c, b);
    }

    #[test]
    fn matching_and_max_hits() {
        let mut rule = status_rule(&["list"], &[], 1.0, &[503]);
        rule.max_hits = Some(2);
        let f = Faults::new(FaultConfig {
            api: vec![
                rule,
                ApiFaultRule {
                    verbs: vec![],
                    resources: vec!["pods".into()],
                    rate: 1.0,
                    max_hits: None,
                    action: ApiFaultAction::Latency { ms: 5 },
                },
            ],
            ..Default::default()
        });
        assert_eq!(f.api_fault("get", "jobs"), None);
        assert!(matches!(
            f.api_fault("list", "jobs"),
            Some(ApiFault::Status { code: 503, .. })
        ));
        assert!(matches!(
            f.api_fault("LIST", "jobs"),
            Some(ApiFault::Status { code: 503, .. })
        ));
        assert_eq!(f.api_fault("list", "jobs"), None, "max_hits exhausted");
        assert_eq!(
            f.api_fault("list", "pods"),
            Some(ApiFault::Latency(Duration::from_millis(5)))
        );
        // set() resets the counters.
        f.set(f.get());
        assert!(f.api_fault("list", "jobs").is_some());
    }

    #[test]
    fn config_parses_from_json() {
        let cfg: FaultConfig = serde_json::from_str(
            r#"{"seed":7,
                "api":[{"verbs":["create"],"resources":["jobs"],"rate":0.5,
                        "action":{"status":{"codes":[429],"retry_after_seconds":2}}},
                       {"verbs":["watch"],"action":"reset"}],
                "portforward":{"drop_after_bytes":1024,"ports":[9000]},
                "s3":[{"ops":["GetObject"],"codes":[503],"max_hits":1}]}"#,
        )
        .expect("valid fault config");
        assert_eq!(cfg.api[1].action, ApiFaultAction::Reset);
        let f = Faults::new(cfg);
        assert_eq!(f.api_fault("watch", "pods"), Some(ApiFault::Reset));
        assert_eq!(f.portforward_budget(80), None);
        assert_eq!(f.portforward_budget(9000), Some(1024));
        assert_eq!(f.s3_fault("PutObject"), None);
        assert_eq!(
            f.s3_fault("GetObject"),
            Some(S3Fault::Error {
                status: 503,
                code: "SlowDown"
            })
        );
        assert_eq!(f.s3_fault("GetObject"), None);
        assert!(
            serde_json::from_str::<FaultConfig>(r#"{"sed":1}"#).is_err(),
            "unknown fields are rejected"
        );
    }
}
