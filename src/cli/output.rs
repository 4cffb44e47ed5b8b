//! Output rendering shared by commands: text vs JSON, progress. Data goes to stdout; logs and
//! progress go to stderr.

use std::io::Write;

use serde::Serialize;

use crate::engine::view::{RunView, StepView};

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints lines of aligned columns on stdout.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
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

/// Renders `vast runs show` as text.
pub fn print_run(v: &RunView, executing_pid: Option<u32>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "run       {}", v.id)?;
    writeln!(out, "operation {}", v.operation)?;
    match executing_pid {
        Some(pid) => writeln!(out, "status    {} (executing, pid {pid})", v.status)?,
        None if v.message.is_empty() => writeln!(out, "status    {}", v.status)?,
        None => writeln!(out, "status    {}: {}", v.status, v.message)?,
    }
    writeln!(out, "started   {}", v.started_at)?;
    writeln!(out, "updated   {}", v.updated_at)?;
    writeln!(out, "steps")?;
    for s in &v.steps {
        let indent = if s.child.is_some() { "    " } else { "  " };
        writeln!(out, "{}", step_line(s, indent))?;
        for e in &s.errors {
            writeln!(
                out,
                "{indent}    attempt {} ({}, {}): {}",
                e.attempt, e.kind, e.at, e.message
            )?;
        }
    }
    Ok(())
}
