//! Output rendering shared by commands: text vs JSON, tables, whether to colour (`--color`,
//! `NO_COLOR`). Data and results go to stdout; logs and progress go to stderr. Which human
//! lines are printed under `-q`/`-qq` and `--log-format json` is [`crate::console`]'s
//! (re-exported here).

use std::io::Write;

pub use crate::console::{error, json_result, note, plural, quiet, result, status, warn};

use serde::Serialize;

use crate::cli::args::ColorChoice;
use crate::engine::view::{RunView, StepView};

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    crate::console::json_printed();
    Ok(())
}

/// Prints lines of aligned columns on stdout ([`render_table`]).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(render_table(header, rows, 2).as_bytes())?;
    Ok(())
}

/// Plain aligned columns (`comfy-table`, no borders): each column as wide as its widest cell,
/// `gap` spaces between columns, no trailing spaces, never wrapped to the terminal's width.
/// An empty `header` prints none; otherwise cells beyond the header's columns are dropped.
pub fn render_table(header: &[&str], rows: &[Vec<String>], gap: u16) -> String {
    let columns = if header.is_empty() {
        rows.iter().map(Vec::len).max().unwrap_or(0)
    } else {
        header.len()
    };
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .add_rows(rows.iter().map(|r| r.iter().take(columns).cloned()));
    if !header.is_empty() {
        t.set_header(header.iter().copied());
    }
    let last = columns.saturating_sub(1);
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, if i == last { 0 } else { gap }));
    }
    let mut out = t.trim_fmt();
    out.push('\n');
    out
}

fn step_line(s: &StepView, indent: &str) -> String {
    let mut line = format!("{indent}{:<20} {:<13}", s.key, s.status);
    if s.map.is_none() {
        line.push_str(&format!(" attempts {}/{}", s.attempts, s.max_attempts));
    }
    if let Some(m) = &s.map {
        line.push_str(&format!(
            " {} items: {} succeeded, {} running, {} waiting to retry, {} pending, {} failed, {} paused",
            m.items, m.succeeded, m.running, m.retry_waiting, m.pending, m.failed, m.paused
        ));
    }
    if let Some(p) = &s.progress {
        line.push_str(&format!("  progress {}/{}", p.done, p.total));
    }
    if let Some(c) = &s.cursor {
        line.push_str(&format!("  cursor {c}"));
    }
    if let Some(t) = &s.next_retry_at {
        line.push_str(&format!("  next retry {t}"));
    }
    line
}

/// Prints `vast runs show` as text.
pub fn print_run(v: &RunView, executing_pid: Option<u32>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(render_run(v, executing_pid).as_bytes())?;
    Ok(())
}

/// Renders `vast runs show` as text: the run, then each step with attempts n/N, progress,
/// cursor and next retry time, and every attempt's error under it.
pub fn render_run(v: &RunView, executing_pid: Option<u32>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "run       {}", v.id);
    let _ = writeln!(out, "operation {}", v.operation);
    let _ = match executing_pid {
        Some(pid) => writeln!(out, "status    {} (executing, pid {pid})", v.status),
        None if v.message.is_empty() => writeln!(out, "status    {}", v.status),
        None => writeln!(out, "status    {}: {}", v.status, v.message),
    };
    let _ = writeln!(out, "started   {}", v.started_at);
    let _ = writeln!(out, "updated   {}", v.updated_at);
    let _ = writeln!(out, "steps");
    for s in &v.steps {
        let indent = if s.child.is_some() { "    " } else { "  " };
        let _ = writeln!(out, "{}", step_line(s, indent));
        for e in &s.errors {
            let _ = writeln!(
                out,
                "{indent}    attempt {} ({}, {}): {}",
                e.attempt, e.kind, e.at, e.message
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::view::{ErrorView, ProgressView};

    #[test]
    fn show_text_has_attempts_every_error_next_retry_and_progress() {
        let err = |attempt| ErrorView {
            attempt,
            at: "2026-11-28T05:00:00.000Z".into(),
            kind: "transient".into(),
            message: format!("reset {attempt}"),
        };
        let v = RunView {
            id: "download-2026-11-28-050000-abcd".into(),
            operation: "download".into(),
            status: "interrupted".into(),
            started_at: "2026-11-28T05:00:00.000Z".into(),
            updated_at: "2026-11-28T05:00:09.000Z".into(),
            message: "resume with `vast resume download-2026-11-28-050000-abcd`".into(),
            params: "{}".into(),
            events: 9,
            steps: vec![StepView {
                key: "fetch".into(),
                name: "fetch".into(),
                child: None,
                implementation: "download.fetch".into(),
                status: "retry_waiting".into(),
                attempts: 2,
                max_attempts: 5,
                errors: vec![err(1), err(2)],
                next_retry_at: Some("2026-11-28T05:00:30.000Z".into()),
                progress: Some(ProgressView {
                    done: 1024,
                    total: 4096,
                }),
                cursor: Some("1024".into()),
                map: None,
            }],
        };
        let text = render_run(&v, None);
        for want in [
            "attempts 2/5",
            "progress 1024/4096",
            "next retry 2026-11-28T05:00:30.000Z",
            "attempt 1 (transient, 2026-11-28T05:00:00.000Z): reset 1",
            "attempt 2 (transient, 2026-11-28T05:00:00.000Z): reset 2",
            "vast resume download-2026-11-28-050000-abcd",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}

/// Whether to colour output going to a stream that `is_terminal` or not: `--color`, where
/// `auto` honours `NO_COLOR` (any non-empty value, no-color.org).
pub fn color_enabled(choice: ColorChoice, is_terminal: bool) -> bool {
    color_enabled_with(choice, is_terminal, std::env::var_os("NO_COLOR").as_deref())
}

/// [`color_enabled`] with the value of `NO_COLOR` given.
pub fn color_enabled_with(
    choice: ColorChoice,
    is_terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_terminal && no_color.is_none_or(|v| v.is_empty()),
    }
}

#[cfg(test)]
mod table_tests {
    use super::render_table;

    #[test]
    fn tables_are_plain_aligned_columns() {
        let rows = vec![
            vec!["run-1".to_string(), "download".into(), "succeeded".into()],
            vec!["selftest-22".to_string(), "run".into(), "é".into()],
        ];
        assert_eq!(
            render_table(&["ID", "OPERATION", "STATUS"], &rows, 2),
            "ID           OPERATION  STATUS\n\
             run-1        download   succeeded\n\
             selftest-22  run        é\n"
        );
        assert_eq!(render_table(&["A", "B"], &[], 1), "A B\n");
        let rows = vec![
            vec!["ok".to_string(), "kubeconfig".into(), "read".into()],
            vec![String::new(), String::new(), "fix: x".into()],
        ];
        assert_eq!(
            render_table(&[], &rows, 2),
            "ok  kubeconfig  read\n                fix: x\n"
        );
    }
}

#[cfg(test)]
mod color_tests {
    use super::color_enabled_with as on;
    use crate::cli::args::ColorChoice::{Always, Auto, Never};
    use std::ffi::OsStr;

    #[test]
    fn color_follows_the_flag_the_terminal_and_no_color() {
        let set = Some(OsStr::new("1"));
        assert!(on(Always, false, set));
        assert!(!on(Never, true, None));
        assert!(on(Auto, true, None));
        assert!(on(Auto, true, Some(OsStr::new(""))));
        assert!(!on(Auto, true, set), "NO_COLOR wins in auto");
        assert!(!on(Auto, false, None), "not a terminal");
    }
}
