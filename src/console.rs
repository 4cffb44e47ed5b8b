//! The one place that decides whether and where a human line is printed: status lines and
//! notes are hidden by `-q`, results and warnings by `-qq`, errors never; stdout carries status
//! lines and results, stderr notes, warnings and errors (as JSON log events only, with
//! `--log-format json`). Below every layer that prints (cli, ops), so both use it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

static QUIET: AtomicU8 = AtomicU8::new(0);
static JSON_LOGS: AtomicBool = AtomicBool::new(false);
static JSON_RESULT: AtomicBool = AtomicBool::new(false);

/// `--json` of a command: stdout carries one JSON document, so status lines and the human
/// result are not printed (notes, warnings and errors still go to stderr).
pub fn json_result(on: bool) {
    JSON_RESULT.store(on, Ordering::Relaxed);
}

static JSON_PRINTED: AtomicBool = AtomicBool::new(false);

/// A JSON document was printed on stdout (a command with `--json` that printed none gets the
/// minimal one: its exit code).
pub fn json_printed() {
    JSON_PRINTED.store(true, Ordering::Relaxed);
}

/// Whether [`json_printed`] was called.
pub fn was_json_printed() -> bool {
    JSON_PRINTED.load(Ordering::Relaxed)
}

/// Whether a command's `--json` is on.
pub fn json_result_on() -> bool {
    JSON_RESULT.load(Ordering::Relaxed)
}

/// Sets how human lines are printed: `quiet` is the number of `-q` (1: only errors and the
/// final result; 2: only errors), `json_logs` is `--log-format json` (stderr carries only
/// JSON log events).
pub fn configure(quiet: u8, json_logs: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    JSON_LOGS.store(json_logs, Ordering::Relaxed);
}

/// Which kind of human line, and so where it goes and whether `-q` hides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Progress of a command ("Checking Kubernetes cluster access..."): stdout; hidden by `-q`.
    Status,
    /// Bookkeeping on stderr ("run X started ..."): hidden by `-q`.
    Note,
    /// The command's final result ("✓ Cluster setup completed successfully!"): stdout; hidden
    /// by `-qq`.
    Result,
    /// Something the user should know that is no error: stderr; hidden by `-qq`.
    Warn,
    /// An error: stderr, always.
    Error,
}

/// Where a line of `kind` goes with `quiet` `-q`s and `json_logs`: None (not printed),
/// `Some(false)` stdout, `Some(true)` stderr (a JSON log event when `json_logs`).
pub fn route(kind: Line, quiet: u8) -> Option<bool> {
    match kind {
        Line::Status if quiet == 0 => Some(false),
        Line::Note if quiet == 0 => Some(true),
        Line::Result if quiet < 2 => Some(false),
        Line::Warn if quiet < 2 => Some(true),
        Line::Error => Some(true),
        _ => None,
    }
}

/// Prints `message` (one or more lines) as a line of `kind`.
pub fn emit(kind: Line, message: &str) {
    let Some(stderr) = route(kind, QUIET.load(Ordering::Relaxed)) else {
        return;
    };
    if !stderr && JSON_RESULT.load(Ordering::Relaxed) {
        return;
    }
    if !stderr {
        println!("{message}");
    } else if JSON_LOGS.load(Ordering::Relaxed) {
        match kind {
            Line::Error => tracing::error!("{message}"),
            Line::Warn => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
    } else {
        eprintln!("{message}");
    }
}

/// A status line on stdout (hidden by `-q`).
pub fn status(message: impl AsRef<str>) {
    emit(Line::Status, message.as_ref());
}

/// A note on stderr (hidden by `-q`).
pub fn note(message: impl AsRef<str>) {
    emit(Line::Note, message.as_ref());
}

/// The final result on stdout (hidden by `-qq`).
pub fn result(message: impl AsRef<str>) {
    emit(Line::Result, message.as_ref());
}

/// A warning on stderr (hidden by `-qq`).
pub fn warn(message: impl AsRef<str>) {
    emit(Line::Warn, message.as_ref());
}

/// An error on stderr (always).
pub fn error(message: impl AsRef<str>) {
    emit(Line::Error, message.as_ref());
}

/// Whether `-q` was given (commands that draw their own output check it).
pub fn quiet() -> u8 {
    QUIET.load(Ordering::Relaxed)
}

/// `n` and `noun`, plural when `n` is not 1: "1 run", "2 runs", "0 runs" (nouns whose plural
/// is `s`-suffixed, which are all vast prints).
pub fn plural(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod route_tests {
    use super::{plural, route, Line};

    #[test]
    fn quiet_keeps_errors_and_the_result_and_quieter_only_errors() {
        let shown = |q| {
            [
                Line::Status,
                Line::Note,
                Line::Result,
                Line::Warn,
                Line::Error,
            ]
            .into_iter()
            .filter(|k| route(*k, q).is_some())
            .collect::<Vec<_>>()
        };
        assert_eq!(shown(0).len(), 5);
        assert_eq!(shown(1), vec![Line::Result, Line::Warn, Line::Error]);
        assert_eq!(shown(2), vec![Line::Error]);
        assert_eq!(route(Line::Status, 0), Some(false), "status on stdout");
        assert_eq!(route(Line::Result, 1), Some(false), "result on stdout");
        assert_eq!(route(Line::Error, 2), Some(true), "errors on stderr");
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1u64, "run"), "1 run");
        assert_eq!(plural(0u64, "run"), "0 runs");
        assert_eq!(plural(2u64, "bucket"), "2 buckets");
    }
}
