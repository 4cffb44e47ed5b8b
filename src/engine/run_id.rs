//! Run ids: `<operation>-<YYYY-MM-DD>-<HHMMSS>-<suffix>` in UTC, e.g.
//! `run-2026-11-28-034512-k3f9`.
//!
//! Human-readable (operation and time are visible), sortable within an operation (fixed-width
//! timestamp), and collision-free in practice: four random characters from `[a-z0-9]` give
//! 1.6 million ids per operation and second, and the store refuses an id that already exists.
//! The id of a `run` operation doubles as the campaign id: bucket name and `run-id` label,
//! so it only uses characters valid in both (lowercase alphanumerics and `-`, ≤ 63 chars).

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The id of one run of an operation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

/// A string that is not a valid run id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid run id '{0}': expected lowercase letters, digits and '-', at most 63 characters")]
pub struct InvalidRunId(pub String);

const SUFFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl RunId {
    /// A fresh id for `operation` at the current UTC time.
    pub fn generate(operation: &str) -> RunId {
        Self::generate_at(operation, jiff::Timestamp::now())
    }

    /// A fresh id for `operation` at `at` (tests pin the time).
    pub fn generate_at(operation: &str, at: jiff::Timestamp) -> RunId {
        let mut rng = rand::rng();
        let suffix: String = (0..4)
            .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
            .collect();
        let stamp = at.strftime("%Y-%m-%d-%H%M%S");
        RunId(format!("{operation}-{stamp}-{suffix}"))
    }

    /// Parses a user-supplied id (e.g. `vast resume <run-id>`), checking only its alphabet.
    pub fn parse(s: &str) -> Result<RunId, InvalidRunId> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(RunId(s.to_string()))
        } else {
            Err(InvalidRunId(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_operation_utc_stamp_and_suffix() {
        let at: jiff::Timestamp = "2026-11-28T03:45:12Z".parse().expect("timestamp");
        let id = RunId::generate_at("run", at);
        let s = id.as_str();
        assert!(s.starts_with("run-2026-11-28-034512-"), "{s}");
        assert_eq!(s.len(), "run-2026-11-28-034512-".len() + 4);
        assert_eq!(RunId::parse(s), Ok(id.clone()));
    }

    #[test]
    fn ids_generated_in_the_same_second_differ() {
        let at = jiff::Timestamp::now();
        let ids: std::collections::HashSet<_> = (0..200)
            .map(|_| RunId::generate_at("download-cleanup", at))
            .collect();
        assert!(ids.len() >= 199);
    }

    #[test]
    fn parse_rejects_bad_ids() {
        for bad in [
            "",
            "Run-1",
            "run_1",
            "-run",
            "run-",
            &"a".repeat(64),
            "run 1",
        ] {
            assert!(RunId::parse(bad).is_err(), "{bad}");
        }
    }
}
