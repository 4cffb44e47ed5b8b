//! All progress display, in one place, through `indicatif`: the bars of `run --follow` (Jobs
//! finished of total with ok/fail/lost and an ETA), of `download` (the remote compress phase in
//! objects, the transfer in bytes, the extraction in files) and of `upload-to-share`, and the
//! in-place redraw of `monitor`.
//!
//! How progress is shown depends on the process ([`Mode`]):
//!
//! - **Bar** (stderr is a terminal): `indicatif` bars in one process-wide [`MultiProgress`] on
//!   stderr, with steady ticks, human sizes (`BinaryBytes`) and an ETA. Log lines and status
//!   lines are printed above the bars ([`LogWriter`], [`status`]), never through them.
//! - **Lines** (not a terminal, e.g. CI logs): a plain line when the work starts, at every
//!   10 % and at least every 10 s while it moves, and one when it ends; never a redraw
//!   ([`Lines`], a pure formatter driven by an explicit clock, so it is testable).
//! - **Verbose** (`-v`): the same lines as log records (a transfer's at every percent or 5 s).
//! - **Quiet** (`-q`): nothing, neither progress nor a run's status lines.
//!
//! Progress goes to stderr; what a command reports (status lines of a run, summaries) goes to
//! stdout. `monitor`'s block of lines is its output, so its [`Redraw`] draws on stdout (wrapped
//! lines are counted, so no redraw leaves stale lines at any terminal width).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{
    BinaryBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState,
    ProgressStyle,
};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `indicatif` bars on stderr (a terminal).
    Bar,
    /// A plain line now and then (stderr is a file or pipe).
    Lines,
    /// Log records (`-v`).
    Verbose,
    /// Nothing (`-q`: only errors and the final result).
    Quiet,
}

impl Mode {
    /// The mode for this process: `-q` shows nothing, `-v` gives log records, a terminal on
    /// stderr bars, else lines.
    pub fn detect(verbose: bool, quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if verbose {
            Mode::Verbose
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// What is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown as human sizes with a rate.
    Bytes,
    /// Things, named (`objects`, `files`, `jobs`).
    Count(String),
}

/// `1.50 MiB`, `512 B`: the one size format of progress and status lines.
pub fn size(bytes: u64) -> String {
    BinaryBytes(bytes).to_string()
}

/// Units per second moved in this session (`done - base` over `elapsed`), if anything moved.
fn speed(done: u64, base: u64, elapsed: Duration) -> Option<f64> {
    let moved = done.saturating_sub(base);
    let secs = elapsed.as_secs_f64();
    (moved > 0 && secs >= 0.001).then(|| moved as f64 / secs)
}

/// Time left at the session's average speed.
fn eta(done: u64, total: u64, base: u64, elapsed: Duration) -> Option<Duration> {
    if done >= total {
        return Some(Duration::ZERO);
    }
    let s = speed(done, base, elapsed)?;
    Some(Duration::from_secs_f64(
        ((total - done) as f64 / s).min(1e7),
    ))
}

/// `3s`, `2m`, `1h`.
fn short(d: Duration) -> String {
    format!("{:#}", HumanDuration(d))
}

fn percent(done: u64, total: u64) -> u64 {
    (done.min(total).saturating_mul(100))
        .checked_div(total)
        .unwrap_or(100)
}

/// How often [`Lines`] speaks: at every `step` percent, and every `every` while it moves.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub step: u64,
    pub every: Duration,
}

impl Pace {
    /// Plain lines: 10 % or 10 s, whichever first.
    pub const LINES: Pace = Pace {
        step: 10,
        every: Duration::from_secs(10),
    };
    /// Transfers' log records with `-v`: every percent or 5 s.
    pub const VERBOSE: Pace = Pace {
        step: 1,
        every: Duration::from_secs(5),
    };
}

/// The plain-line form of one progress: formatting and pacing, with time passed in (`now` is
/// the time since the work started), so the output of a sequence of updates is deterministic.
///
/// A line when the work starts, then one whenever the percentage crossed a [`Pace::step`]
/// boundary or [`Pace::every`] passed since the last line, and a final line from
/// [`Lines::finish`]. Updates at or past the total wait for the final line.
#[derive(Debug, Clone)]
pub struct Lines {
    label: String,
    unit: Unit,
    total: u64,
    base: u64,
    message: String,
    pace: Pace,
    /// The step and time of the last line.
    last: Option<(u64, Duration)>,
    finished: bool,
}

impl Lines {
    /// `base` is what was already done when this session started (a resume): the rate and
    /// ETA count only what this session moved.
    pub fn new(label: &str, unit: Unit, total: u64, base: u64, pace: Pace) -> Self {
        Lines {
            label: label.to_string(),
            unit,
            total,
            base,
            message: String::new(),
            pace,
            last: None,
            finished: false,
        }
    }

    /// Extra words after the counts (e.g. `(6 ok, 1 fail, 0 lost)`).
    pub fn set_message(&mut self, message: &str) {
        self.message = message.to_string();
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    /// The line to print for `done` at `now`, if one is due.
    pub fn update(&mut self, done: u64, now: Duration) -> Option<String> {
        if self.finished || done >= self.total {
            return None;
        }
        let step = percent(done, self.total) / self.pace.step.max(1);
        let due = match self.last {
            None => true,
            Some((s, at)) => step > s || now.saturating_sub(at) >= self.pace.every,
        };
        if !due {
            return None;
        }
        self.last = Some((step, now));
        Some(self.line(done, now, false))
    }

    /// The final line (once; `None` after the first call).
    pub fn finish(&mut self, done: u64, now: Duration) -> Option<String> {
        if self.finished {
            return None;
        }
        self.finished = true;
        Some(self.line(done, now, true))
    }

    /// `<label>  42%  1.20 MiB/3.00 MiB  1.00 MiB/s  ETA 2s` (bytes) or
    /// `<label>  40%  2/5 jobs  (2 ok, 0 fail, 0 lost)  ETA 6s`; a final line ends with
    /// `in <elapsed>` instead of the ETA.
    pub fn line(&self, done: u64, now: Duration, last: bool) -> String {
        let mut s = format!("{}  {:>3}%  ", self.label, percent(done, self.total));
        match &self.unit {
            Unit::Bytes => {
                let _ = write!(s, "{}/{}", size(done), size(self.total));
                if let Some(r) = speed(done, self.base, now) {
                    let _ = write!(s, "  {}/s", size(r as u64));
                }
            }
            Unit::Count(what) => {
                let _ = write!(s, "{done}/{} {what}", self.total);
            }
        }
        if !self.message.is_empty() {
            let _ = write!(s, "  {}", self.message);
        }
        if last {
            let _ = write!(s, "  in {}", short(now));
        } else if let Some(e) = eta(done, self.total, self.base, now) {
            let _ = write!(s, "  ETA {}", short(e));
        }
        s
    }
}

/// The process-wide bars on stderr (drawn only when stderr is a terminal).
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// The in-place block on stdout (monitor), if one was created.
static BLOCK: OnceLock<MultiProgress> = OnceLock::new();

/// Runs `f` with every bar and redrawn block cleared, then redraws them: whatever `f` prints
/// stays above them.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let with_block = || match BLOCK.get() {
        Some(b) => b.suspend(f),
        None => f(),
    };
    match BARS_IN_USE.get() {
        Some(()) => bars().suspend(with_block),
        None => with_block(),
    }
}

/// Set once the first bar was created (until then nothing needs suspending).
static BARS_IN_USE: OnceLock<()> = OnceLock::new();

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▓░")
}

/// A bar's style: the counts, this session's rate and the ETA (computed as [`Lines`] does,
/// so a resumed transfer's earlier bytes never count as speed).
fn bar_style(unit: &Unit, base: u64) -> ProgressStyle {
    let counts = match unit {
        Unit::Bytes => "{binary_bytes}/{binary_total_bytes}  {rate}".to_string(),
        Unit::Count(what) => format!("{{pos}}/{{len}} {}", what.replace(['{', '}'], "")),
    };
    style(&format!(
        "{{spinner}} {{prefix}}  [{{bar:20}}] {{percent:>3}}%  {counts}  {{msg}}  {{eta_left}}"
    ))
    .with_key(
        "rate",
        move |st: &ProgressState, w: &mut dyn std::fmt::Write| {
            if let Some(r) = speed(st.pos(), base, st.elapsed()) {
                let _ = write!(w, "{}/s", size(r as u64));
            }
        },
    )
    .with_key(
        "eta_left",
        move |st: &ProgressState, w: &mut dyn std::fmt::Write| {
            let total = st.len().unwrap_or(0);
            if st.pos() < total {
                if let Some(e) = eta(st.pos(), total, base, st.elapsed()) {
                    let _ = write!(w, "ETA {}", short(e));
                }
            }
        },
    )
}

/// The progress of one piece of work (a transfer, a compression, an extraction, the Jobs of
/// a run), shown in the process's [`Mode`].
pub struct Progress {
    mode: Mode,
    lines: Lines,
    started: Instant,
    bar: Option<ProgressBar>,
    done: u64,
    finished: bool,
}

impl Progress {
    /// Bytes of a transfer; `already` were there before this session (a resume).
    pub fn bytes(label: &str, total: u64, already: u64, mode: Mode) -> Self {
        Self::new(label, Unit::Bytes, total, already, mode)
    }

    /// Things counted (`objects`, `files`, `jobs`); `already` were done before this session.
    pub fn count(label: &str, what: &str, total: u64, already: u64, mode: Mode) -> Self {
        Self::new(label, Unit::Count(what.to_string()), total, already, mode)
    }

    fn new(label: &str, unit: Unit, total: u64, already: u64, mode: Mode) -> Self {
        // Transfers log every percent with -v (as before indicatif); counts keep the 10 % pace.
        let pace = if mode == Mode::Verbose && unit == Unit::Bytes {
            Pace::VERBOSE
        } else {
            Pace::LINES
        };
        let bar = (mode == Mode::Bar).then(|| {
            let _ = BARS_IN_USE.set(());
            let b = ProgressBar::new(total)
                .with_style(bar_style(&unit, already))
                .with_prefix(label.to_string())
                .with_position(already);
            let b = bars().add(b);
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress {
            mode,
            lines: Lines::new(label, unit, total, already, pace),
            started: Instant::now(),
            bar,
            done: already,
            finished: false,
        }
    }

    /// Extra words after the counts (e.g. `(6 ok, 1 fail, 0 lost)`).
    pub fn set_message(&mut self, message: &str) {
        self.lines.set_message(message);
        if let Some(b) = &self.bar {
            b.set_message(message.to_string());
        }
    }

    pub fn set_total(&mut self, total: u64) {
        self.lines.set_total(total);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// `done` are done.
    pub fn update(&mut self, done: u64) {
        self.done = done;
        if let Some(b) = &self.bar {
            b.set_position(done);
            return;
        }
        if let Some(line) = self.lines.update(done, self.started.elapsed()) {
            self.emit(&line);
        }
    }

    /// The final line at the last update's count.
    pub fn finish(&mut self) {
        self.finish_at(self.done);
    }

    /// The final line at `done` (the plain line, with the time taken): on a terminal it
    /// replaces the bar, above the other bars.
    pub fn finish_at(&mut self, done: u64) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.done = done;
        let Some(line) = self.lines.finish(done, self.started.elapsed()) else {
            return;
        };
        match self.bar.take() {
            Some(b) => {
                b.finish_and_clear();
                bars().remove(&b);
                suspend(|| crate::console::note(&line));
            }
            None => self.emit(&line),
        }
    }

    /// Ends without a final line (a status line says how it ended).
    pub fn clear(&mut self) {
        self.finished = true;
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            bars().remove(&b);
        }
    }

    fn emit(&self, line: &str) {
        match self.mode {
            Mode::Verbose => tracing::info!("{line}"),
            Mode::Quiet => {}
            // A note on stderr: a JSON log event with `--log-format json`.
            _ => suspend(|| crate::console::note(line)),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A bar of work that failed or was cancelled goes away with it.
        self.clear();
    }
}

/// Prints one status line of a run (`<run>  <what>`) on stdout, above any bar.
pub fn status(mode: Mode, run: &str, what: &str) {
    match mode {
        Mode::Verbose => tracing::info!("{run}  {what}"),
        Mode::Quiet => {}
        // Through the console, so `-q` and a command's `--json` (stdout is one document)
        // govern these lines as every other status line.
        _ => suspend(|| crate::console::status(format!("{run}  {what}"))),
    }
}

/// A block of lines redrawn in place on stdout (a terminal): each frame replaces the last,
/// lines longer than the terminal are counted with their wrapped height (indicatif's draw
/// state), so no frame leaves stale lines, whatever the width.
pub struct Redraw {
    bar: ProgressBar,
    last: Vec<String>,
}

impl Redraw {
    pub fn stdout() -> Self {
        let block =
            BLOCK.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        let bar = block.add(ProgressBar::new(0).with_style(style("{msg}")));
        Redraw {
            bar,
            last: Vec::new(),
        }
    }

    /// Draws `lines` in place of the previous frame.
    pub fn show(&mut self, lines: &[String]) {
        self.last = lines.to_vec();
        self.bar.set_message(lines.join("\n"));
        self.bar.tick();
    }

    /// Replaces the redrawn frame by the same lines printed for good; what is printed next
    /// comes below them.
    pub fn leave(self) {
        self.bar.finish_and_clear();
        if let Some(b) = BLOCK.get() {
            b.remove(&self.bar);
        }
        let mut out = std::io::stdout().lock();
        for l in &self.last {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    }
}

/// The writer of log records (`tracing_subscriber`'s `with_writer`): each record is written
/// to stderr whole, with the bars cleared first and redrawn after, so a log line never tears a
/// bar nor leaves a copy of one behind.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// One log record, written on drop.
pub struct LogRecord(Vec<u8>);

impl Write for LogRecord {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogRecord {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        if buf.is_empty() {
            return;
        }
        suspend(|| {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&buf);
            let _ = err.flush();
        });
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogRecord;
    fn make_writer(&'a self) -> LogRecord {
        LogRecord(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human_and_never_zero_mib() {
        assert_eq!(size(500), "500 B");
        assert_eq!(size(3 * 1024 * 1024 / 2), "1.50 MiB");
        let l = Lines::new("r", Unit::Bytes, 700, 0, Pace::LINES);
        let s = l.line(300, Duration::from_secs(1), false);
        assert_eq!(s, "r   42%  300 B/700 B  300 B/s  ETA 1s");
    }

    #[test]
    fn lines_at_ten_percent_or_ten_seconds() {
        let mut l = Lines::new("r", Unit::Count("jobs".into()), 100, 0, Pace::LINES);
        let s = |n| Duration::from_secs(n);
        assert!(l.update(0, s(0)).is_some(), "the start is said");
        assert!(l.update(5, s(1)).is_none());
        assert!(l.update(10, s(2)).is_some(), "10 %");
        assert!(l.update(11, s(3)).is_none());
        assert!(
            l.update(11, s(11)).is_none(),
            "not yet 10 s since the last line"
        );
        assert!(l.update(12, s(12)).is_some(), "10 s since the last line");
        assert!(
            l.update(100, s(14)).is_none(),
            "the end is the final line's"
        );
        assert!(l.finish(100, s(14)).is_some());
        assert!(l.finish(100, s(15)).is_none(), "once");
    }
}
