//! The real `vast` binary: `runs`/`resume` commands, the lease between two processes, Ctrl-C,
//! failpoints configured through `FAILPOINTS`, and the kill -9 torture test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

const VAST: &str = env!("CARGO_BIN_EXE_vast");

struct Env {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    ledger: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    Env {
        state: tmp.path().join("state"),
        ledger: tmp.path().join("ledger"),
        _tmp: tmp,
    }
}

fn vast(e: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(VAST);
    c.args(args)
        .env("VAST_STATE_DIR", &e.state)
        .env_remove("FAILPOINTS")
        .env_remove("VAST_LOG");
    c
}

fn run(e: &Env, args: &[&str]) -> Output {
    vast(e, args).output().expect("spawn vast")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Starts `vast selftest` and returns the child and the run id it printed.
fn spawn_selftest(e: &Env, extra: &[&str], failpoints: Option<&str>) -> (Child, String) {
    let ledger = e.ledger.display().to_string();
    let mut args = vec!["selftest", "--ledger", &ledger];
    args.extend_from_slice(extra);
    let mut c = vast(e, &args);
    if let Some(fp) = failpoints {
        c.env("FAILPOINTS", fp);
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read id");
    let id = line
        .trim()
        .strip_prefix("run ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, id)
}

fn ledger_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn show_json(e: &Env, id: &str) -> Value {
    let out = run(e, &["runs", "show", id, "--json"]);
    assert!(out.status.success(), "runs show: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn kill9(child: &mut Child) {
    // SAFETY: sending a signal to our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

#[test]
fn runs_commands_and_exit_codes() {
    let e = env();
    let out = run(
        &e,
        &[
            "selftest",
            "--items",
            "5",
            "--ledger",
            &e.ledger.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout)
        .trim()
        .trim_start_matches("run ")
        .to_string();
    let out2 = run(&e, &["selftest", "--items", "2"]);
    assert!(out2.status.success());

    let list = run(&e, &["runs", "list", "--json"]);
    let v: Value = serde_json::from_slice(&list.stdout).expect("json");
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], id.as_str(), "oldest first");
    for r in arr {
        for k in ["id", "operation", "status", "started_at"] {
            assert!(r[k].is_string(), "{k} in {r}");
        }
        assert_eq!(r["status"], "succeeded");
    }
    let s = show_json(&e, &id);
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["steps"][1]["map"]["items"], 5);
    // The documented, stable JSON shape (README): fields may be added, never removed.
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    for k in [
        "id",
        "operation",
        "status",
        "started_at",
        "updated_at",
        "message",
        "params",
        "events",
        "executing_pid",
        "steps",
    ] {
        assert!(
            keys(&s).contains(&k.to_string()),
            "runs show --json lacks {k}"
        );
    }
    for k in [
        "key",
        "name",
        "child",
        "implementation",
        "status",
        "attempts",
        "max_attempts",
        "errors",
        "next_retry_at",
        "progress",
        "cursor",
        "map",
    ] {
        assert!(
            keys(&s["steps"][0]).contains(&k.to_string()),
            "step lacks {k}"
        );
    }
    assert!(text(&run(&e, &["runs", "show", &id]).stdout).contains("5 items: 5 succeeded"));

    let ev: Value =
        serde_json::from_slice(&run(&e, &["runs", "events", &id, "--json"]).stdout).expect("json");
    let types: Vec<&str> = ev
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|x| x["type"].as_str())
        .collect();
    assert_eq!(types.first(), Some(&"run_created"));
    assert_eq!(types.last(), Some(&"run_finished"));
    assert_eq!(types.iter().filter(|t| **t == "step_started").count(), 7);

    let dot = run(&e, &["runs", "graph", &id, "--format", "dot"]);
    assert!(text(&dot.stdout).contains("\"item\" -> \"finish\""));
    let g: Value =
        serde_json::from_slice(&run(&e, &["runs", "graph", "selftest", "--json"]).stdout)
            .expect("json");
    assert_eq!(g["edges"].as_array().map(Vec::len), Some(2));

    // Resuming a finished run does nothing and succeeds.
    assert_eq!(run(&e, &["resume", &id]).status.code(), Some(0));
    // Bad input: clear message, exit 2, nothing created.
    for args in [
        vec!["resume", "nope-2026"],
        vec!["runs", "show", "nope-2026"],
        vec!["resume", "Bad_Id"],
        vec!["runs", "graph", "nope"],
    ] {
        let out = run(&e, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains("nope") || err.contains("Bad_Id"), "{err}");
    }
    assert!(!e.state.join("runs/nope-2026").exists());
}

#[test]
fn failed_run_exits_1_and_resume_completes_it() {
    let e = env();
    let out = run(&e, &["selftest", "--items", "4", "--fail-item", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let id = text(&out.stdout)
        .trim()
        .trim_start_matches("run ")
        .to_string();
    assert!(text(&out.stderr).contains(&format!("vast resume {id}")));
    let s = show_json(&e, &id);
    assert_eq!(s["status"], "failed");
    let child = s["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|x| x["key"] == "item[2]")
        .expect("item[2] listed")
        .clone();
    assert_eq!(child["errors"][0]["kind"], "permanent");
    assert_eq!(child["attempts"], 1);
    assert_eq!(run(&e, &["resume", &id]).status.code(), Some(0));
    assert_eq!(show_json(&e, &id)["status"], "succeeded");
}

#[test]
fn second_executor_gets_a_clear_error_and_a_killed_holders_lease_is_taken_over() {
    let e = env();
    let (mut child, id) = spawn_selftest(&e, &["--items", "400", "--item-delay-ms", "50"], None);
    let pid = child.id();
    let out = run(&e, &["resume", &id]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("run is being executed by pid {pid}")) && err.contains(&id),
        "the error names the run and the pid: {err}"
    );
    // Inspection works while the run executes.
    let s = show_json(&e, &id);
    assert_eq!(s["executing_pid"], pid);
    assert_eq!(s["status"], "running");
    let list: Value =
        serde_json::from_slice(&run(&e, &["runs", "list", "--json"]).stdout).expect("json");
    assert_eq!(list[0]["executing_pid"], pid);

    kill9(&mut child);
    assert_eq!(show_json(&e, &id)["status"], "interrupted");
    // Two processes resume the run: the first takes over the dead holder's lease, the second
    // is refused while the first executes.
    let first = vast(&e, &["resume", &id])
        .env("VAST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("resume");
    let first_pid = first.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while show_json(&e, &id)["executing_pid"] != first_pid {
        assert!(
            Instant::now() < deadline,
            "the first resume never took the lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run(&e, &["resume", &id]);
    assert_eq!(second.status.code(), Some(2));
    assert!(
        text(&second.stderr).contains(&format!("run is being executed by pid {first_pid}")),
        "{}",
        text(&second.stderr)
    );
    let out = first.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("took over the lease of pid {pid}")),
        "{}",
        text(&out.stderr)
    );
    let lines = ledger_lines(&e.ledger);
    let missing: Vec<u64> = (0..400)
        .filter(|i| !lines.contains(&format!("item {i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} of {} lines",
        lines.len()
    );
}

#[test]
fn ctrl_c_stops_persists_and_exits_130() {
    let e = env();
    let (child, id) = spawn_selftest(&e, &["--items", "200", "--item-delay-ms", "50"], None);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("vast resume {id}")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(show_json(&e, &id)["status"], "interrupted");

    // A second Ctrl-C exits at once; the run stays resumable.
    let (mut child, id2) = spawn_selftest(&e, &["--items", "200", "--item-delay-ms", "50"], None);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        // SAFETY: as above.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(child.wait().expect("wait").code(), Some(130));
    for id in [&id, &id2] {
        let out = run(&e, &["resume", id]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[test]
#[cfg(feature = "failpoints")]
fn failpoints_in_the_journal_and_in_steps_via_env() {
    let e = env();
    for fp in [
        "journal.after_write=25*off->panic",
        "journal.before_write=40*off->panic",
    ] {
        let (child, id) = spawn_selftest(&e, &["--items", "30"], Some(fp));
        let out = child.wait_with_output().expect("wait");
        assert!(!out.status.success(), "{fp}: the failpoint must stop vast");
        let out = run(&e, &["resume", &id]);
        assert!(out.status.success(), "{fp}: {}", text(&out.stderr));
    }
    let (child, id) = spawn_selftest(&e, &["--items", "10"], Some("selftest.item=3*return(boom)"));
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = show_json(&e, &id);
    let errors: Vec<String> = s["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .flat_map(|x| x["errors"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x["message"].as_str().map(str::to_string))
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|m| m.contains("failpoint selftest.item: boom")),
        "{errors:?}"
    );
}

/// SIGKILL a real `vast` executing a 1,000-item map workflow at random moments, ≥ 200 times
/// (kill delays ≤ 40 ms, so 200 kills cannot finish 12.5 s of item work),
/// resuming each time; every reopen must succeed, the run must complete, and the ledger must
/// show every item done.
#[test]
fn torture_kill9_at_random_moments_then_resume() {
    let e = env();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut rng = rand::rng();
    let (mut child, id) = spawn_selftest(
        &e,
        &["--items", "1000", "--item-delay-ms", "100", "--chunks", "1"],
        None,
    );
    std::thread::sleep(Duration::from_millis(rng.random_range(0..30)));
    kill9(&mut child);
    let mut kills = 1;
    let mut completed = false;
    let mut iterations = 0;
    let mut recoveries = 0;
    while kills < 200 && Instant::now() < deadline {
        iterations += 1;
        let log = e._tmp.path().join("resume.log");
        let mut child = vast(&e, &["resume", &id])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(rng.random_range(1..40)));
        match child.try_wait().expect("try_wait") {
            None => {
                kill9(&mut child);
                kills += 1;
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                recoveries += err.matches("rebuilt").count();
            }
            Some(status) => {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(status.success(), "resume after a kill failed: {err}");
                completed = true;
                break;
            }
        }
        if iterations % 25 == 0 {
            let out = run(&e, &["runs", "show", &id, "--json"]);
            assert!(
                out.status.success(),
                "reopen after kill {kills} failed: {}",
                text(&out.stderr)
            );
        }
    }
    eprintln!("torture: {kills} kills in {iterations} resumes; sled rebuilt from the frame log {recoveries} times");
    assert!(
        kills >= 200 || completed,
        "only {kills} kills before the deadline"
    );
    assert!(
        kills >= 200,
        "the run completed after only {kills} kills; make items slower"
    );
    let out = run(&e, &["resume", &id]);
    assert!(out.status.success(), "final resume: {}", text(&out.stderr));
    let s = show_json(&e, &id);
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["steps"][1]["map"]["succeeded"], 1000);
    let lines: std::collections::HashSet<String> = ledger_lines(&e.ledger).into_iter().collect();
    let missing: Vec<u64> = (0..1000)
        .filter(|i| !lines.contains(&format!("item {i}")))
        .collect();
    assert!(missing.is_empty(), "items never applied: {missing:?}");
    assert!(lines.contains("finish 1000"));
}

fn wreck_files_in(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let f = entry.expect("entry").path();
        if f.is_file() {
            std::fs::write(&f, b"\xff\xfe not a database \x00\x01").expect("wreck");
        }
    }
}

#[test]
fn corrupted_store_is_rebuilt_from_the_frame_log_or_reported_without_touching_it() {
    let e = env();
    let out = run(&e, &["selftest", "--items", "5", "--fail-item", "4"]);
    assert_eq!(out.status.code(), Some(1));
    let id = text(&out.stdout)
        .trim()
        .trim_start_matches("run ")
        .to_string();
    let run_dir = e.state.join("runs").join(&id);

    // sled destroyed, frame log intact: rebuilt, and the run completes.
    wreck_files_in(&run_dir.join("db"));
    let out = vast(&e, &["resume", &id])
        .env("VAST_LOG", "warn")
        .output()
        .expect("resume");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("rebuilt"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        run_dir.join("db.corrupt-0").is_dir(),
        "the damaged database is kept aside"
    );
    assert_eq!(show_json(&e, &id)["status"], "succeeded");

    // Both destroyed: a clear error, non-zero exit, nothing changed.
    wreck_files_in(&run_dir.join("db"));
    std::fs::write(run_dir.join("db.log"), b"garbage").expect("wreck log");
    let before: Vec<Vec<u8>> = ["db.log"]
        .iter()
        .map(|f| std::fs::read(run_dir.join(f)).expect("read"))
        .collect();
    let out = run(&e, &["resume", &id]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("corrupt") && err.contains(&id), "{err}");
    assert_eq!(
        std::fs::read(run_dir.join("db.log")).expect("read"),
        before[0]
    );
    assert!(!run_dir.join("db.corrupt-1").exists());
    let out = run(&e, &["runs", "show", &id]);
    assert!(!out.status.success());

    // Files so damaged that sled would silently start an empty database over them (a
    // configuration file of ≤ 8 bytes): reported, naming the database, and left as they are.
    let db = run_dir.join("db");
    for entry in std::fs::read_dir(&db).expect("dir") {
        let f = entry.expect("entry").path();
        if f.is_file() {
            std::fs::write(&f, b"garbage").expect("wreck");
        }
    }
    let snapshot = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| {
                let p = e.expect("entry").path();
                p.is_file()
                    .then(|| (p.clone(), std::fs::read(&p).expect("read")))
            })
            .collect();
        v.sort();
        v
    };
    let before = (
        snapshot(&db),
        std::fs::read(run_dir.join("db.log")).expect("log"),
    );
    for args in [vec!["resume", &id], vec!["runs", "show", &id]] {
        let out = run(&e, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("corrupt") && err.contains(&db.display().to_string()),
            "{args:?}: {err}"
        );
    }
    let after = (
        snapshot(&db),
        std::fs::read(run_dir.join("db.log")).expect("log"),
    );
    assert!(before == after, "the damaged files were modified");
}

/// One run executing never blocks another run: a second run starts, completes, is inspected
/// and resumed while the first is still executing in another process.
#[test]
fn another_run_is_not_blocked_by_an_executing_run() {
    let e = env();
    let (mut slow, slow_id) =
        spawn_selftest(&e, &["--items", "400", "--item-delay-ms", "50"], None);
    let out = run(&e, &["selftest", "--items", "20", "--fail-item", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let id = text(&out.stdout)
        .trim()
        .trim_start_matches("run ")
        .to_string();
    assert_ne!(id, slow_id);
    let events = run(&e, &["runs", "events", &id, "--json"]);
    assert!(events.status.success(), "{}", text(&events.stderr));
    let out = run(&e, &["resume", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(show_json(&e, &id)["status"], "succeeded");
    assert!(
        slow.try_wait().expect("try_wait").is_none(),
        "the first run was still executing throughout"
    );
    assert_eq!(show_json(&e, &slow_id)["status"], "running");
    kill9(&mut slow);
}

/// Issue 12, defect 1: with the frame log garbled in the middle *and* sled's files destroyed,
/// the store holds only the records before the damage. A resume must not replay that prefix
/// (it would repeat every effect after it): it refuses, naming the run and what was lost, and
/// changes nothing; `--force` continues from what survived. The same holds when the log lost
/// its tail and only the snapshot remembers how many records there were.
#[test]
fn a_store_that_lost_records_refuses_to_resume_unless_forced() {
    for damage in ["middle", "tail"] {
        let e = env();
        let ledger = e.ledger.display().to_string();
        let out = run(&e, &["selftest", "--items", "20", "--ledger", &ledger]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let id = text(&out.stdout)
            .trim()
            .trim_start_matches("run ")
            .to_string();
        let run_dir = e.state.join("runs").join(&id);
        let effects = ledger_lines(&e.ledger);
        assert!(effects.contains(&"finish 20".to_string()));

        let log = run_dir.join("db.log");
        let mut bytes = std::fs::read(&log).expect("log");
        let mid = bytes.len() / 2;
        match damage {
            "middle" => bytes[mid..mid + 16].iter_mut().for_each(|b| *b ^= 0xa5),
            _ => bytes.truncate(mid),
        }
        std::fs::write(&log, &bytes).expect("damage log");
        wreck_files_in(&run_dir.join("db"));

        for attempt in 0..2 {
            let out = run(&e, &["resume", &id]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{damage} #{attempt}: {err}");
            assert!(
                err.contains(&id) && err.contains("lost records") && err.contains("--force"),
                "{damage}: {err}"
            );
            assert_eq!(
                ledger_lines(&e.ledger),
                effects,
                "{damage}: an effect was repeated"
            );
            // Inspecting the run (which may repair files and rewrite the snapshot) never
            // hides the loss from the next resume.
            let _ = run(&e, &["runs", "show", &id]);
        }
        let out = run(&e, &["resume", &id, "--force"]);
        assert!(out.status.success(), "{damage}: {}", text(&out.stderr));
        assert_eq!(show_json(&e, &id)["status"], "succeeded");
        // The loss was accepted: it is not reported again.
        let out = run(&e, &["resume", &id]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{damage}: {}",
            text(&out.stderr)
        );
    }
}

/// `vast runs prune`: only finished runs that no process executes, newest `--keep N` kept,
/// `--older-than` honoured, unfinished ones only when asked, the work directory removed too;
/// without a filter it is a usage error and removes nothing.
#[test]
fn runs_prune_removes_only_what_it_should() {
    let e = env();
    let mut done = Vec::new();
    for _ in 0..3 {
        let out = run(&e, &["selftest", "--items", "2"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        done.push(
            text(&out.stdout)
                .trim()
                .trim_start_matches("run ")
                .to_string(),
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
    // A run whose process died mid-way (a panic in a step): interrupted, not finished.
    let out = vast(&e, &["selftest", "--items", "3"])
        .env("FAILPOINTS", "selftest.item=panic")
        .output()
        .expect("spawn");
    let unfinished = text(&out.stdout)
        .trim()
        .trim_start_matches("run ")
        .to_string();
    let status = show_json(&e, &unfinished)["status"].clone();
    assert!(status == "interrupted" || status == "running", "{status}");
    std::fs::create_dir_all(e.state.join("work").join(&done[0])).expect("work dir");
    let ids = |e: &Env| -> Vec<String> {
        let v: Value =
            serde_json::from_slice(&run(e, &["runs", "list", "--json"]).stdout).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    let out = run(&e, &["runs", "prune"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(ids(&e).len(), 4);
    let out = run(&e, &["runs", "prune", "--older-than", "1h"]);
    assert!(out.status.success());
    assert_eq!(ids(&e).len(), 4, "{}", text(&out.stdout));
    let out = run(&e, &["runs", "prune", "--keep", "1", "--dry-run"]);
    assert!(
        text(&out.stdout).contains("Would remove 2 runs"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(ids(&e).len(), 4);

    let out = run(&e, &["runs", "prune", "--keep", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Removed 2 runs; kept 1 run"),
        "{}",
        text(&out.stdout)
    );
    let left = ids(&e);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.contains(&done[2]) && left.contains(&unfinished),
        "{left:?}"
    );
    assert!(!e.state.join("work").join(&done[0]).exists());

    let out = run(
        &e,
        &["runs", "prune", "--keep", "0", "--include-unfinished"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(ids(&e).is_empty());
}
