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
    /// Spot-node preemption of the first pod of Jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempt: Option<PreemptFault>,
    /// Outcomes of Job pods by Job name or `TEST_ID`, in order; the first matching rule
    /// decides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodOutcomeRule>,
}

/// Preemption of Job pods, as a GKE spot node's shutdown does it: each Job's first pod is
/// chosen with probability `fraction` (drawn from a generator of its own, seeded with the
/// config's `seed`, in the order the first pods are created) and fails once, half-way
/// through its run time, with a `DisruptionTarget` condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreemptFault {
    /// Probability in `[0, 1]` that a Job's first pod is preempted.
    pub fraction: f64,
    /// Preempt at most this many pods (default: unlimited).
    #[serde(default)]
    pub max_hits: Option<u64>,
}

/// How a simulated Job pod ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioOutcome {
    /// Exit code 0.
    Succeed,
    /// The main container exits with `exit_code` (default 1), reason `Error`.
    Fail,
    /// The main container is killed: exit code 137, reason `OOMKilled`, no results.
    Oomkilled,
    /// The pod runs until it is deleted (e.g. by `activeDeadlineSeconds`).
    Hang,
}

impl ScenarioOutcome {
    /// The annotation value (`sim.vast.dev/outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioOutcome::Succeed => "succeed",
            ScenarioOutcome::Fail => "fail",
            ScenarioOutcome::Oomkilled => "oomkilled",
            ScenarioOutcome::Hang => "hang",
        }
    }
}

/// One scenario outcome rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodOutcomeRule {
    /// A substring of the Job's name or of the `TEST_ID` env value of one of its containers.
    #[serde(rename = "match")]
    pub pattern: String,
    pub outcome: ScenarioOutcome,
    /// Exit code of `fail` (default 1).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Only the first `attempts` pods of a matching Job get the outcome, later ones succeed
    /// (default: all).
    #[serde(default)]
    pub attempts: Option<u64>,
}

/// Counters of the simulated cluster since start (`GET /sim/stats`); not reset by
/// [`Faults::set`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimStats {
    /// Pods failed by the preemption fault.
    pub preempted: u64,
    /// `namespace/name` of the Jobs whose pod was preempted, in order.
    pub preempted_jobs: Vec<String>,
    /// Pods created by the job controller.
    pub pods_created_by_jobs: u64,
    /// Failed pods a Job's `podFailurePolicy` ignored (`Ignore` rule).
    pub pod_failures_ignored: u64,
    /// Failed pods counted toward a Job's `backoffLimit`.
    pub pod_failures_counted: u64,
    /// Jobs failed by a `FailJob` rule.
    pub jobs_failed_by_policy: u64,
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
    /// Draws of the preemption fault only, so API and S3 faults do not shift them.
    preempt_rng: StdRng,
    preempt_hits: u64,
}

impl State {
    fn new(config: FaultConfig) -> Self {
        State {
            rng: StdRng::seed_from_u64(config.seed),
            api_hits: vec![0; config.api.len()],
            s3_hits: vec![0; config.s3.len()],
            pf_hits: 0,
            preempt_rng: StdRng::seed_from_u64(config.seed ^ 0x7072_6565_6d70_7421),
            preempt_hits: 0,
            config,
        }
    }
}

pub struct Faults {
    state: Mutex<State>,
    stats: Mutex<SimStats>,
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
            stats: Mutex::new(SimStats::default()),
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

/// What the faults decide for a new Job pod (see [`Faults::job_pod`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobPodFault {
    /// The pod is preempted once while it runs.
    pub preempt: bool,
    /// Outcome and exit code from the first matching `pods` rule.
    pub outcome: Option<(ScenarioOutcome, Option<i32>)>,
}

impl Faults {
    /// Decides for the `attempt`-th pod (0-based) of Job `job` whose containers have the
    /// `TEST_ID`s `test_ids`: the first pod of each Job draws for preemption; the first
    /// `pods` rule whose `match` is a substring of the Job name or of a `TEST_ID` gives the
    /// outcome (`succeed` from attempt `attempts` on).
    pub fn job_pod(&self, job: &str, test_ids: &[&str], attempt: u64) -> JobPodFault {
        let mut st = self.lock();
        let st = &mut *st;
        let mut out = JobPodFault::default();
        if let Some(p) = &st.config.preempt {
            if attempt == 0 && p.max_hits.is_none_or(|max| st.preempt_hits < max) {
                let hit = if p.fraction >= 1.0 {
                    true
                } else if p.fraction <= 0.0 || p.fraction.is_nan() {
                    false
                } else {
                    st.preempt_rng.random::<f64>() < p.fraction
                };
                if hit {
                    st.preempt_hits += 1;
                    out.preempt = true;
                }
            }
        }
        if let Some(rule) =
            st.config.pods.iter().find(|r| {
                job.contains(&r.pattern) || test_ids.iter().any(|t| t.contains(&r.pattern))
            })
        {
            out.outcome = Some(if rule.attempts.is_some_and(|k| attempt >= k) {
                (ScenarioOutcome::Succeed, None)
            } else {
                (rule.outcome, rule.exit_code)
            });
        }
        out
    }

    fn stats_lock(&self) -> std::sync::MutexGuard<'_, SimStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters since start.
    pub fn stats(&self) -> SimStats {
        self.stats_lock().clone()
    }

    /// Updates the counters (called by the controllers).
    pub fn record(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut self.stats_lock())
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

    #[test]
    fn preemption_and_outcome_rules() {
        let cfg: FaultConfig = serde_json::from_str(
            r#"{"seed": 5, "preempt": {"fraction": 0.3, "max_hits": null},
                "pods": [{"match": "cfg-a-", "outcome": "fail", "exit_code": 3, "attempts": 1},
                         {"match": "oom", "outcome": "oomkilled"}]}"#,
        )
        .expect("valid");
        let draws = |f: &Faults| {
            (0..100)
                .map(|i| f.job_pod(&format!("job-{i}"), &[], 0).preempt)
                .collect::<Vec<_>>()
        };
        let a = draws(&Faults::new(cfg.clone()));
        assert_eq!(a, draws(&Faults::new(cfg.clone())), "same seed, same picks");
        let n = a.iter().filter(|x| **x).count();
        assert!((15..=45).contains(&n), "fraction 0.3 of 100 gave {n}");
        let f = Faults::new(cfg.clone());
        // API faults do not shift the preemption draws; later attempts never draw
        assert_eq!(f.api_fault("get", "pods"), None);
        assert!(!f.job_pod("x", &[], 1).preempt);
        assert_eq!(draws(&f), a);
        // rules: by TEST_ID or Job name, first k attempts
        let f = Faults::new(FaultConfig {
            preempt: None,
            ..cfg
        });
        assert_eq!(
            f.job_pod("run-1", &["cfg-a-1"], 0).outcome,
            Some((ScenarioOutcome::Fail, Some(3)))
        );
        assert_eq!(
            f.job_pod("run-1", &["cfg-a-1"], 1).outcome,
            Some((ScenarioOutcome::Succeed, None))
        );
        assert_eq!(
            f.job_pod("oom-job", &[], 4).outcome,
            Some((ScenarioOutcome::Oomkilled, None))
        );
        assert_eq!(f.job_pod("other", &["cfg-b-1"], 0), JobPodFault::default());
        let capped = Faults::new(FaultConfig {
            preempt: Some(PreemptFault {
                fraction: 1.0,
                max_hits: Some(2),
            }),
            ..Default::default()
        });
        let hits = (0..5)
            .filter(|i| capped.job_pod(&format!("j{i}"), &[], 0).preempt)
            .count();
        assert_eq!(hits, 2);
    }
}
