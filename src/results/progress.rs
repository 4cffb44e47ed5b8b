//! Progress display of transfers, in upstream's formats: a redrawn bar on a terminal
//! (`<run>  [████░░░░]   42.0%  1.2 MiB/3.0 MiB  4.5 MiB/s`), log lines with `-v`, and a plain
//! line every 10 % or 10 s when stdout is not a terminal (CI logs).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn bar (stdout is a terminal).
    Bar,
    /// A line now and then (stdout is a file or pipe).
    Lines,
    /// Log lines (`-v`).
    Verbose,
}

impl Mode {
    /// The mode for this process: `-v` gives log lines, a terminal a bar, else lines.
    pub fn detect(verbose: bool) -> Mode {
        if verbose {
            Mode::Verbose
        } else if std::io::stdout().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// `x.y MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// `x.y MiB/s`, `x.y KiB/s` or `N B/s`.
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let s = elapsed.as_secs_f64().max(1e-3);
    let r = bytes as f64 / s;
    if r >= MIB {
        format!("{:.1} MiB/s", r / MIB)
    } else if r >= 1024.0 {
        format!("{:.1} KiB/s", r / 1024.0)
    } else {
        format!("{} B/s", r as u64)
    }
}

/// A 20-character bar.
pub fn bar(fraction: f64) -> String {
    let filled = ((fraction.clamp(0.0, 1.0)) * 20.0).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(20 - filled))
}

/// The progress of one transfer of a run.
pub struct Transfer {
    label: String,
    total: u64,
    mode: Mode,
    started: Instant,
    /// Bytes already there when this session started (a resume).
    base: u64,
    last_pct: i64,
    last_line: Instant,
    finished: bool,
}

impl Transfer {
    pub fn new(label: &str, total: u64, already: u64, mode: Mode) -> Self {
        Transfer {
            label: label.to_string(),
            total,
            mode,
            started: Instant::now(),
            base: already,
            last_pct: -1,
            last_line: Instant::now(),
            finished: false,
        }
    }

    fn line(&self, done: u64) -> String {
        let pct = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        format!(
            "{}  [{}]  {:5.1}%  {}/{}  {}",
            self.label,
            bar(pct / 100.0),
            pct,
            mib(done),
            mib(self.total),
            rate(done.saturating_sub(self.base), self.started.elapsed())
        )
    }

    /// `done` of `total` bytes are there.
    pub fn update(&mut self, done: u64) {
        let pct = (done.saturating_mul(100))
            .checked_div(self.total)
            .unwrap_or(100) as i64;
        match self.mode {
            Mode::Bar => {
                if pct > self.last_pct {
                    self.last_pct = pct;
                    let mut out = std::io::stdout().lock();
                    let _ = write!(out, "\r\x1b[2K{}", self.line(done));
                    let _ = out.flush();
                }
            }
            Mode::Lines => {
                if pct / 10 > self.last_pct / 10
                    || self.last_line.elapsed() >= Duration::from_secs(10)
                {
                    self.last_pct = pct;
                    self.last_line = Instant::now();
                    println!("{}", self.line(done));
                }
            }
            Mode::Verbose => {
                if pct > self.last_pct || self.last_line.elapsed() >= Duration::from_secs(5) {
                    self.last_pct = pct;
                    self.last_line = Instant::now();
                    tracing::info!(
                        "{}  Progress: {pct}% ({done}/{} bytes) {}",
                        self.label,
                        self.total,
                        rate(done.saturating_sub(self.base), self.started.elapsed())
                    );
                }
            }
        }
    }

    /// The final line.
    pub fn finish(&mut self, done: u64) {
        if self.finished {
            return;
        }
        self.finished = true;
        let line = self.line(done);
        match self.mode {
            Mode::Bar => println!("\r\x1b[2K{line}"),
            Mode::Lines if self.last_pct == 100 => {}
            Mode::Lines => println!("{line}"),
            Mode::Verbose => tracing::info!("{line}"),
        }
    }
}

/// Prints one status line of a run (`<run>  <what>`), clearing a bar first on a terminal.
pub fn status(mode: Mode, run: &str, what: &str) {
    match mode {
        Mode::Bar => println!("\r\x1b[2K{run}  {what}"),
        Mode::Lines => println!("{run}  {what}"),
        Mode::Verbose => tracing::info!("{run}  {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_upstream() {
        assert_eq!(mib(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(rate(2 * 1024 * 1024, Duration::from_secs(1)), "2.0 MiB/s");
        assert_eq!(rate(2048, Duration::from_secs(1)), "2.0 KiB/s");
        assert_eq!(rate(10, Duration::from_secs(1)), "10 B/s");
        assert_eq!(bar(0.5), format!("{}{}", "█".repeat(10), "░".repeat(10)));
        let t = Transfer::new("run-1", 4 * 1024 * 1024, 0, Mode::Lines);
        let l = t.line(1024 * 1024);
        assert!(
            l.starts_with("run-1  [█████░░░░░░░░░░░░░░░]   25.0%  1.0 MiB/4.0 MiB  "),
            "{l}"
        );
    }
}
