//! Retrying, as data and as one helper: [`RetryPolicy`] (the retry schedule, serde data; the
//! engine applies it between attempts of a step, [`RetryPolicy::retry_if`] applies the same
//! schedule to one async operation outside the engine: the CLI's pre-flight checks, the
//! port-forward's stream openings) and [`FailureBudget`] (how many failures a wait or watch loop
//! may see before it gives up; only progress resets it). The only file that uses the `backoff`
//! crate; the schedule is a pure function of the attempts already made and the time elapsed
//! since the first attempt, so it continues across processes from persisted counts.

use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use serde::{Deserialize, Serialize};

/// Retry schedule of one step. Attempt `n` (1-based) that fails transiently is retried after
/// `min(initial_interval × multiplier^(n-1), max_interval)`, randomised by ± `jitter` (a
/// fraction), unless `max_attempts` attempts were made or the retry would start after
/// `max_elapsed` since the first attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(with = "duration")]
    pub initial_interval: Duration,
    pub multiplier: f64,
    #[serde(with = "duration")]
    pub max_interval: Duration,
    #[serde(with = "opt_duration")]
    pub max_elapsed: Option<Duration>,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// API-call default (anchors §6.4): 1 s × 2 → 60 s, 5 attempts, 15 min, ±20 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(60),
            max_elapsed: Some(Duration::from_secs(15 * 60)),
            jitter: 0.2,
        }
    }
}

#[derive(Clone)]
struct FixedClock(Instant);

impl backoff::Clock for FixedClock {
    fn now(&self) -> Instant {
        self.0
    }
}

impl RetryPolicy {
    /// Checks the numbers; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(format!(
                "retry.multiplier must be ≥ 1 (got {})",
                self.multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "retry.jitter must be within 0..1 (got {})",
                self.jitter
            ));
        }
        if self.max_interval < self.initial_interval {
            return Err("retry.max_interval must not be below retry.initial_interval".into());
        }
        Ok(())
    }

    /// The un-jittered delay after failed attempt `attempt` (1-based).
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(1000) as i32);
        let secs = (self.initial_interval.as_secs_f64() * exp).min(self.max_interval.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    /// Delay before the next attempt after `attempts_made` attempts (counted against this
    /// budget) failed transiently, `elapsed` after the first of them; `None` when exhausted.
    /// `retry_after` (a server-provided delay) is honoured when longer than the schedule.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let base = Instant::now();
        let mut b = backoff::exponential::ExponentialBackoff::<FixedClock> {
            current_interval: self.base_delay(attempts_made),
            initial_interval: self.initial_interval,
            randomization_factor: self.jitter,
            multiplier: self.multiplier,
            max_interval: self.max_interval,
            start_time: base,
            max_elapsed_time: None,
            clock: FixedClock(base + elapsed),
        };
        let delay = b.next_backoff()?.max(retry_after.unwrap_or_default());
        match self.max_elapsed {
            Some(max) if elapsed + delay > max => None,
            _ => Some(delay),
        }
    }

    /// Calls `op` until it succeeds, fails with an error `is_transient` rejects (returned at
    /// once), or the schedule ([`RetryPolicy::next_delay`]) is exhausted (the last error is
    /// returned). The same schedule as between the attempts of a step, for one operation done
    /// outside the engine.
    pub async fn retry_if<T, E, F, Fut>(
        &self,
        mut op: F,
        is_transient: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let first = tokio::time::Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !is_transient(&err) {
                return Err(err);
            }
            let Some(delay) = self.next_delay(attempts, first.elapsed(), None) else {
                return Err(err);
            };
            tracing::debug!(
                "attempt {attempts}/{} failed, retrying in {} ms: {err}",
                self.max_attempts,
                delay.as_millis()
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// The error budget of a wait or watch loop: at most `max_failures` failures, and none later
/// than `max_duration` after the first of them, counted since the last *progress* (something
/// observed that changed what the loop knows: a Job's state, a count, bytes). Only
/// [`FailureBudget::progress`] resets it; a reconnect, a re-list or a successful call that
/// brought nothing new does not, so a loop whose every call fails after a partial success
/// still ends.
#[derive(Debug, Clone)]
pub struct FailureBudget {
    max_failures: u32,
    max_duration: Duration,
    failures: u32,
    first: Option<Instant>,
}

/// A spent [`FailureBudget`]: how many failures, over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub failures: u32,
    pub elapsed: Duration,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failures in {} s without progress",
            self.failures,
            self.elapsed.as_secs()
        )
    }
}

impl FailureBudget {
    pub fn new(max_failures: u32, max_duration: Duration) -> Self {
        FailureBudget {
            max_failures: max_failures.max(1),
            max_duration,
            failures: 0,
            first: None,
        }
    }

    /// Progress was observed: the failures so far are forgiven.
    pub fn progress(&mut self) {
        self.failures = 0;
        self.first = None;
    }

    /// Failures since the last progress.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts one failure; `Err` when the budget is spent (the loop must give up).
    pub fn failure(&mut self) -> Result<(), Exhausted> {
        self.failure_at(Instant::now())
    }

    fn failure_at(&mut self, now: Instant) -> Result<(), Exhausted> {
        let first = *self.first.get_or_insert(now);
        self.failures += 1;
        let elapsed = now.saturating_duration_since(first);
        if self.failures >= self.max_failures || elapsed >= self.max_duration {
            return Err(Exhausted {
                failures: self.failures,
                elapsed,
            });
        }
        Ok(())
    }
}

/// Durations in YAML/JSON as text: `250ms`, `10s`, `5m`, `2h` (or a bare number of seconds).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let bad = || format!("invalid duration '{s}' (expected e.g. 500ms, 10s, 5m, 1h, 7d)");
        let n: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(bad()),
        };
        Ok(Duration::from_secs_f64(secs))
    }

    pub fn render(d: Duration) -> String {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&render(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `Option<Duration>` as text (see [`duration`]); `null`/absent is `None`.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::duration::render(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::duration::parse(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_millis(500),
            max_elapsed: Some(Duration::from_secs(2)),
            jitter,
        }
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let p = policy(0.0);
        let d: Vec<_> = (1..=5)
            .map(|n| {
                p.next_delay(n, Duration::ZERO, None)
                    .expect("delay")
                    .as_millis()
            })
            .collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
        assert_eq!(p.next_delay(6, Duration::ZERO, None), None, "max_attempts");
    }

    #[test]
    fn max_elapsed_stops_the_schedule() {
        let p = policy(0.0);
        assert_eq!(
            p.next_delay(1, Duration::from_millis(1850), None),
            Some(Duration::from_millis(100))
        );
        assert_eq!(p.next_delay(1, Duration::from_millis(1950), None), None);
        let unlimited = RetryPolicy {
            max_elapsed: None,
            ..p
        };
        assert!(unlimited
            .next_delay(1, Duration::from_secs(3600), None)
            .is_some());
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy(0.5);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let d = p.next_delay(2, Duration::ZERO, None).expect("delay");
            assert!(
                d >= Duration::from_millis(100)
                    && d <= Duration::from_millis(300) + Duration::from_nanos(1),
                "{d:?}"
            );
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 10, "jitter should randomise: {seen:?}");
    }

    #[test]
    fn retry_after_is_honoured_when_longer() {
        let p = policy(0.0);
        assert_eq!(
            p.next_delay(1, Duration::ZERO, Some(Duration::from_millis(700))),
            Some(Duration::from_millis(700))
        );
        assert_eq!(
            p.next_delay(1, Duration::ZERO, Some(Duration::from_millis(10))),
            Some(Duration::from_millis(100))
        );
    }

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_interval: Duration::from_millis(10),
            multiplier: 2.0,
            max_interval: Duration::from_millis(40),
            max_elapsed: None,
            jitter: 0.2,
        }
    }

    #[derive(Debug, PartialEq)]
    enum E {
        Transient(u32),
        Permanent(u32),
    }

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_if_retries_transient_errors_up_to_the_bound() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let op = || async {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Err::<(), E>(E::Transient(n))
        };
        let t0 = tokio::time::Instant::now();
        let r = fast(4).retry_if(op, |e| matches!(e, E::Transient(_))).await;
        assert_eq!(r, Err(E::Transient(4)), "the last error is returned");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
        // 10 + 20 + 40 ms, each ±20 %.
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(56) && waited <= Duration::from_millis(85),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_if_returns_a_permanent_error_at_once_and_a_success_as_it_comes() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r = fast(5)
            .retry_if(
                || async {
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if n < 2 {
                        Err::<u32, E>(E::Transient(n))
                    } else {
                        Err(E::Permanent(n))
                    }
                },
                |e| matches!(e, E::Transient(_)),
            )
            .await;
        assert_eq!(r, Err(E::Permanent(2)));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);

        let calls = std::sync::atomic::AtomicU32::new(0);
        let r = fast(5)
            .retry_if(
                || async {
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if n < 3 {
                        Err(E::Transient(n))
                    } else {
                        Ok(n)
                    }
                },
                |e| matches!(e, E::Transient(_)),
            )
            .await;
        assert_eq!(r, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_if_stops_at_max_elapsed() {
        let p = RetryPolicy {
            max_attempts: 1000,
            max_elapsed: Some(Duration::from_millis(200)),
            jitter: 0.0,
            ..fast(1000)
        };
        let calls = std::sync::atomic::AtomicU32::new(0);
        let t0 = tokio::time::Instant::now();
        let r = p
            .retry_if(
                || async {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Err::<(), E>(E::Transient(0))
                },
                |_| true,
            )
            .await;
        assert!(r.is_err());
        assert!(
            t0.elapsed() <= Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
        // 10 + 20 + 40 + 40 + 40 + 40 = 190 ms: 7 calls.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 7);
    }

    #[test]
    fn a_failure_budget_is_reset_only_by_progress() {
        let t0 = Instant::now();
        let mut b = FailureBudget::new(3, Duration::from_secs(60));
        assert!(b.failure_at(t0).is_ok());
        assert!(b.failure_at(t0).is_ok());
        b.progress();
        assert_eq!(b.failures(), 0);
        assert!(b.failure_at(t0).is_ok());
        assert!(b.failure_at(t0).is_ok());
        let e = b.failure_at(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.failures, 3);
        assert_eq!(e.to_string(), "3 failures in 1 s without progress");
        // The time bound: two failures 60 s apart spend it.
        let mut b = FailureBudget::new(1000, Duration::from_secs(60));
        assert!(b.failure_at(t0).is_ok());
        assert!(b.failure_at(t0 + Duration::from_secs(59)).is_ok());
        assert!(b.failure_at(t0 + Duration::from_secs(60)).is_err());
        b.progress();
        assert!(b.failure_at(t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn serde_form_is_text_durations() {
        let p: RetryPolicy =
            serde_yaml::from_str("max_attempts: 3\ninitial_interval: 250ms\nmax_elapsed: 2m\n")
                .expect("yaml");
        assert_eq!(p.initial_interval, Duration::from_millis(250));
        assert_eq!(p.max_elapsed, Some(Duration::from_secs(120)));
        assert_eq!(p.multiplier, 2.0);
        let back: RetryPolicy =
            serde_json::from_str(&serde_json::to_string(&p).expect("json")).expect("json");
        assert_eq!(back, p);
        assert!(duration::parse("5 parsecs").is_err());
        assert!(p.validate().is_ok());
        assert!(RetryPolicy { jitter: 2.0, ..p }.validate().is_err());
    }
}
