//! Progress output (`vast::progress`):
//!
//! - off a terminal, plain lines at every 10 % or 10 s, never a redraw: the formatter driven by
//!   a fake clock (a snapshot), and real `run --follow` and `download` runs whose progress
//!   lines are checked with the numbers redacted (a snapshot of each phase's final line);
//! - on a terminal (tmux on a private socket; skipped with a message when tmux is absent):
//!   `run --follow`'s bar, replaced by one final line; `monitor`'s in-place redraw at 60 and
//!   200 columns, with lines long enough to wrap at 60: after many redraws no stale or
//!   duplicated line is left.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vast::progress::{Lines, Pace, Unit};
use vast_sim::config::SimConfig;

use super::cluster_support::{run_id_of, start, started_id, text, Cluster, VAST};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Drives `l` through `updates` (`(seconds since start, done)`), then finishes it at the last
/// update; the lines it printed.
fn drive(mut l: Lines, updates: &[(f64, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = (0.0, 0);
    for &(t, done) in updates {
        out.extend(l.update(done, Duration::from_secs_f64(t)));
        last = (t, done);
    }
    out.extend(l.finish(last.1, Duration::from_secs_f64(last.0)));
    out
}

#[test]
fn plain_lines_at_ten_percent_or_ten_seconds() {
    let mut all = Vec::new();

    // 3 MiB at 256 KiB/s, reported every 0.25 s, stalled 25 s at half way: a line at start,
    // at each 10 %, and every 10 s of the stall; no redraw, no line per update.
    let mut updates = Vec::new();
    let (mut t, mut done) = (0.0, 0);
    while done < 3 * MIB {
        updates.push((t, done));
        if done == 3 * MIB / 2 && t < 20.0 {
            for k in 1..=100 {
                updates.push((t + k as f64 * 0.25, done));
            }
            t += 25.0;
        }
        t += 0.25;
        done += 64 * KIB;
    }
    updates.push((t, 3 * MIB));
    let lines = drive(
        Lines::new("run-a  downloading", Unit::Bytes, 3 * MIB, 0, Pace::LINES),
        &updates,
    );
    assert!(
        lines.len() <= 10 + 2 + 3,
        "{} lines for {} updates",
        lines.len(),
        updates.len()
    );
    all.push("# a transfer with a stall".to_string());
    all.extend(lines);

    // A resumed transfer: the rate and ETA count only what this session moved.
    let updates: Vec<(f64, u64)> = (0..=8)
        .map(|i| (i as f64, 2 * MIB + i * 256 * KIB))
        .collect();
    all.push("# a resumed transfer (2 MiB were there)".to_string());
    all.extend(drive(
        Lines::new(
            "run-a  downloading",
            Unit::Bytes,
            4 * MIB,
            2 * MIB,
            Pace::LINES,
        ),
        &updates,
    ));

    // A small run: bytes, never `0.0 MiB/0.0 MiB`.
    all.push("# a small transfer".to_string());
    all.extend(drive(
        Lines::new("run-s  uploading", Unit::Bytes, 500, 0, Pace::LINES),
        &[(0.0, 0), (0.1, 200), (0.3, 500)],
    ));

    // The compress phase in objects, with what was written.
    let mut l = Lines::new(
        "run-a  compressing",
        Unit::Count("objects".into()),
        40,
        0,
        Pace::LINES,
    );
    let mut out = Vec::new();
    for i in 0..=40u64 {
        l.set_message(&format!("{} written", vast::progress::size(i * 300 * KIB)));
        out.extend(l.update(i, Duration::from_millis(i * 500)));
    }
    out.extend(l.finish(40, Duration::from_secs(20)));
    all.push("# compressing".to_string());
    all.extend(out);

    // `run --follow`: runs finished of the total with ok/fail/lost, Jobs finishing in bursts.
    let mut l = Lines::new(
        "run-f",
        Unit::Count("jobs finished".into()),
        15,
        0,
        Pace::LINES,
    );
    let mut out = Vec::new();
    let finished = [0, 0, 3, 3, 3, 7, 8, 8, 8, 8, 8, 8, 8, 8, 12, 15];
    for (i, &n) in finished.iter().enumerate() {
        let fail = u64::from(n >= 7);
        let lost = u64::from(n >= 12);
        l.set_message(&format!(
            "({} ok, {fail} fail, {lost} lost)",
            n - fail - lost
        ));
        out.extend(l.update(n, Duration::from_secs(2 * i as u64)));
    }
    out.extend(l.finish(15, Duration::from_secs(30)));
    all.push("# run --follow".to_string());
    all.extend(out);

    insta::assert_snapshot!("progress_plain_lines", all.join("\n"));
}

/// Replaces sizes by `<size>`, durations by `<dur>`, the run id by `<run>` and every other
/// number by `N`.
fn redact(line: &str, id: &str) -> String {
    let line = line.replace(id, "<run>");
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_digit() || *d == '.')
            {
                chars.next();
            }
            out.push('N');
        } else {
            out.push(c);
        }
    }
    let mut s = out;
    for unit in ["GiB", "MiB", "KiB", "B"] {
        s = s.replace(&format!("N {unit}"), "<size>");
    }
    for unit in ["ns", "s", "m", "h"] {
        for after in [" ", "\n"] {
            s = s.replace(&format!(" N{unit}{after}"), &format!(" <dur>{after}"));
        }
        if let Some(stripped) = s.strip_suffix(&format!(" N{unit}")) {
            s = format!("{stripped} <dur>");
        }
    }
    s
}

/// The progress lines of run `id` in `stream` (they start with the run id and a percentage),
/// as (phase label, line).
fn progress_lines(stream: &str, id: &str) -> Vec<String> {
    stream
        .lines()
        .filter(|l| l.starts_with(&format!("{id}  ")) && l.contains('%'))
        .map(str::to_string)
        .collect()
}

/// Checks the plain-line rules on the lines of one phase and returns its final line: one line
/// at the start, then at most one per 10 % (and per 10 s), the last one ends with `in <dur>`.
fn phase(lines: &[String], label: &str, secs: f64) -> String {
    let of: Vec<&String> = lines.iter().filter(|l| l.starts_with(label)).collect();
    assert!(!of.is_empty(), "no '{label}' line in {lines:#?}");
    let (last, before) = of.split_last().unwrap();
    assert!(last.contains("100%") && last.contains("  in "), "{last}");
    assert!(
        before
            .iter()
            .all(|l| !l.contains("100%") && !l.contains("  in ")),
        "{before:#?}"
    );
    assert!(
        before.len() <= 11 + (secs / 10.0) as usize,
        "more lines than 10 % steps and 10 s: {of:#?}"
    );
    last.to_string()
}

/// Off a terminal (the test captures stderr), `run --follow` and `download` print plain
/// progress lines on stderr: no line per finished Job, no per-poll line of the compress phase,
/// no redraw (no carriage return or escape sequence), nothing of it on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_and_download_print_plain_progress_lines_off_a_terminal() {
    let mut cfg = SimConfig::default();
    cfg.pods.job_duration_ms = 1500;
    let c = start(cfg).await;
    c.setup_cli("rke2").await;

    let t0 = Instant::now();
    let out = c
        .vast(&["execution", "cluster", "run", "--follow", "-r", "1"])
        .await;
    let secs = t0.elapsed().as_secs_f64();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let id = started_id(&err, "run-");
    assert!(
        !err.contains("Waiting for") && !err.contains("succeeded."),
        "a line per Job at the default level: {err}"
    );
    let follow = progress_lines(&err, &id);
    let last_follow = phase(&follow, &id, secs);
    assert!(
        last_follow.contains("  100%  5/5 jobs finished  (5 ok, 0 fail, 0 lost)  in "),
        "{last_follow}"
    );
    assert!(progress_lines(&text(&out.stdout), &id).is_empty());

    let t0 = Instant::now();
    let out = c.vast(&["execution", "cluster", "download"]).await;
    let secs = t0.elapsed().as_secs_f64();
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{err}");
    assert!(
        !stdout.contains("streaming S3 to tar.gz... "),
        "a line per poll of the compress phase: {stdout}"
    );
    assert!(progress_lines(&stdout, &id).is_empty(), "{stdout}");
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "a redraw off a terminal: {err:?}"
    );
    let lines = progress_lines(&err, &id);
    let mut finals = vec![redact(&last_follow, &id)];
    for label in ["compressing", "downloading", "extracting"] {
        finals.push(redact(&phase(&lines, &format!("{id}  {label}"), secs), &id));
    }
    assert!(lines.iter().all(|l| !l.contains("0.0 MiB")), "{lines:#?}");
    insta::assert_snapshot!("progress_real_commands", finals.join("\n"));

    // -q: no progress at all.
    let out = c
        .vast(&["-q", "execution", "cluster", "run", "--follow", "-r", "1"])
        .await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("jobs finished") && !text(&out.stdout).contains("jobs finished"),
        "progress with -q: {err}"
    );
}

/// tmux on a private socket, if installed.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn installed() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Runs `vast <args>` in the project of `c` in a tmux terminal of `width` x 40; the screens
/// seen until it ended, and the last one (which ends with `EXIT=<code>`).
async fn in_tmux(c: &Cluster, tmux: &Tmux, width: u16, args: &str) -> (Vec<String>, String) {
    let script = format!(
        "cd {} && unset VAST_STATE_DIR VAST_LOG FAILPOINTS && KUBECONFIG={} VAST_HELM=/nonexistent/helm {} {args}; echo EXIT=$?; sleep 600",
        quote(&c.project),
        quote(&c.kubeconfig),
        quote(Path::new(VAST)),
    );
    let session = format!("s{}", rand_suffix());
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        &width.to_string(),
        "-y",
        "40",
        &script,
    ]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut frames = Vec::new();
    loop {
        let screen = tmux.run(&["capture-pane", "-p", "-S", "-", "-t", &session]);
        if screen.contains("EXIT=") {
            return (frames, screen);
        }
        frames.push(screen);
        assert!(
            Instant::now() < deadline,
            "vast {args} did not end: {}",
            frames.last().cloned().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// On a terminal `run --follow` shows a bar (finished/total, ok/fail/lost) that log records
/// never tear, and leaves one final line in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_shows_a_bar_on_a_terminal_and_leaves_one_final_line() {
    if !Tmux::installed() {
        eprintln!("SKIPPED: tmux is not installed (the CI script, .ci/run, installs it)");
        return;
    }
    let mut cfg = SimConfig::default();
    cfg.pods.job_duration_ms = 2500;
    let c = start(cfg).await;
    c.setup_cli("rke2").await;
    let tmux = Tmux {
        socket: c.tmp.path().join("tmux.sock"),
    };
    let (frames, last) = in_tmux(&c, &tmux, 120, "execution cluster run --follow -r 1").await;
    assert!(last.contains("EXIT=0"), "{last}");
    let bar = |l: &str| l.contains("jobs finished") && l.contains("[") && l.contains("(0 ok");
    assert!(
        frames.iter().any(|f| f.lines().any(bar)),
        "no bar while the Jobs ran: {frames:#?}"
    );
    let finals: Vec<&str> = last
        .lines()
        .filter(|l| l.contains("/5 jobs finished"))
        .collect();
    assert_eq!(finals.len(), 1, "{last}");
    assert!(
        finals[0].contains("100%  5/5 jobs finished  (5 ok, 0 fail, 0 lost)  in "),
        "{last}"
    );
    for once in [
        "All 5 jobs created. Starting execution...",
        "All jobs finished.",
        "RUN STATISTICS",
    ] {
        assert_eq!(last.matches(once).count(), 1, "{once}: {last}");
    }
}

/// Two detached runs of 5 Jobs, then `monitor -i 0.2` in a tmux terminal `width` columns wide
/// until every Job finished; the screens seen while it redrew and the last one.
async fn monitor_in_tmux(width: u16) -> (Vec<String>, Vec<String>, String) {
    let mut cfg = SimConfig::default();
    cfg.pods.job_duration_ms = 2500;
    let c: Cluster = start(cfg).await;
    let tmux = Tmux {
        socket: c.tmp.path().join("tmux.sock"),
    };
    c.setup_cli("rke2").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = c.vast(&["execution", "cluster", "run", "-r", "1"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        ids.push(run_id_of(&text(&out.stdout)));
    }
    let (frames, last) = in_tmux(&c, &tmux, width, "execution cluster monitor -i 0.2").await;
    let frames = frames
        .into_iter()
        .filter(|f| ids.iter().any(|id| f.contains(id.as_str())))
        .collect();
    (ids, frames, last)
}

async fn monitor_redraw_at(width: u16) {
    if !Tmux::installed() {
        eprintln!("SKIPPED: tmux is not installed (the CI script, .ci/run, installs it)");
        return;
    }
    let (ids, frames, last) = monitor_in_tmux(width).await;
    // Upstream's line is over 100 characters: it wraps at 60 columns, not at 200.
    let long = last.lines().filter(|l| l.contains("Running: ")).count();
    assert!(
        frames.len() >= 3,
        "the monitor redrew only {} times",
        frames.len()
    );
    for screen in frames.iter().chain([&last]) {
        for id in &ids {
            assert!(
                screen.matches(id.as_str()).count() <= 1,
                "a stale copy of {id}'s line at {width} columns:\n{screen}"
            );
        }
        assert_eq!(
            screen.matches("Monitoring scenario run jobs").count(),
            1,
            "{screen}"
        );
    }
    for id in &ids {
        assert_eq!(last.matches(id.as_str()).count(), 1, "{last}");
    }
    assert_eq!(last.matches("All jobs finished.").count(), 1, "{last}");
    assert!(last.contains("EXIT=0"), "{last}");
    // No leftover fragment of an earlier frame: the last screen is the header, the final
    // frame (each line over one or two rows), the end message and the exit line.
    let rows: Vec<&str> = last.lines().filter(|l| !l.trim().is_empty()).collect();
    let frame_rows = if width < 100 { 2 } else { 1 };
    let header_rows = if width < 80 { 2 } else { 1 };
    assert_eq!(
        rows.len(),
        header_rows + ids.len() * frame_rows + 2,
        "rows left on the screen at {width} columns (long lines: {long}):\n{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_redraw_leaves_no_stale_lines_at_60_columns() {
    monitor_redraw_at(60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_redraw_leaves_no_stale_lines_at_200_columns() {
    monitor_redraw_at(200).await;
}
