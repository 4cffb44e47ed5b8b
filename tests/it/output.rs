//! Output hygiene with the real binary against vast-sim: `-q` prints only errors and the final
//! result, `-qq` only errors, `--log-format json` makes stderr JSON events only (the human
//! result stays on stdout).

use vast_sim::config::SimConfig;

use super::cluster_support::{start, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_and_json_logs_keep_only_what_was_asked_for() {
    let c = start(SimConfig::default()).await;
    // -q: the result line only (no "Checking ..." status lines, no "run ... started" notes).
    let out = c
        .vast(&["-q", "execution", "cluster", "setup", "rke2"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "✓ Cluster setup completed successfully!\n"
    );
    assert_eq!(text(&out.stderr), "");

    // --log-format json: every stderr line is a JSON event; the result is on stdout.
    let out = c
        .vast(&[
            "--log-format",
            "json",
            "execution",
            "cluster",
            "run",
            "-r",
            "1",
        ])
        .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.is_empty(), "notes and logs are events");
    for l in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("not JSON on stderr ({e}): {l:?}\n{stderr}"));
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
    assert!(stderr.contains("started (resume with"), "{stderr}");
    assert!(
        stdout.contains("✓ Jobs created successfully (Run ID: "),
        "{stdout}"
    );

    // -qq: errors only. A failing command still says why, on stderr.
    let out = c
        .vast(&["-qq", "execution", "cluster", "run-cleanup"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "");
    let out = c
        .vast(&[
            "-qq",
            "execution",
            "cluster",
            "run-cleanup",
            "--context",
            "nosuch",
        ])
        .await;
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("'nosuch'"),
        "{}",
        text(&out.stderr)
    );
    // The same error as one JSON event with --log-format json.
    let out = c
        .vast(&[
            "--log-format",
            "json",
            "execution",
            "cluster",
            "run-cleanup",
            "--context",
            "nosuch",
        ])
        .await;
    let stderr = text(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "ERROR"
            && e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("'nosuch'"))),
        "{stderr}"
    );

    // --json: one document on stdout, nothing human mixed in.
    let out = c
        .vast(&["execution", "cluster", "run", "-r", "2", "--json"])
        .await;
    let stdout = text(&out.stdout);
    let j: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("run --json ({e}): {stdout}\n{}", text(&out.stderr)));
    assert_eq!(j["exit_code"], 0, "{j}");
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(j["run_id"].as_str().unwrap().starts_with("run-"), "{j}");
    assert_eq!(j["bucket"], j["run_id"], "{j}");
    assert_eq!(j["jobs"], 10, "5 configurations × 2 runs: {j}");
    for args in [
        vec!["execution", "cluster", "run-cleanup", "--json"],
        vec!["configuration", "list", "--json"],
        vec![
            "execution",
            "cluster",
            "download-cleanup",
            "--json",
            "--run-id",
            "nosuch",
        ],
    ] {
        let out = c.vast(&args).await;
        let stdout = text(&out.stdout);
        let j: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?} ({e}): {stdout}\n{}", text(&out.stderr)));
        assert!(j.is_array() || j["exit_code"] == 0, "{args:?}: {j}");
    }
}

/// `cleanup` on a terminal asks before removing results that were never downloaded (no: exit
/// 1, nothing removed); without a terminal it proceeds as upstream and lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_asks_before_removing_results_never_downloaded() {
    let c = start(SimConfig::default()).await;
    let id = c.finished_run("rke2").await;
    let setup_file = c.project.join(".robovast_cluster_config.vast-sim");
    // On a pseudo-terminal (util-linux `script`), answering "n".
    let cmdline = format!("{} execution cluster cleanup", super::cluster_support::VAST);
    let cmd = c.command(&[]);
    let mut script = std::process::Command::new("script");
    script
        .args(["-q", "-e", "-c", &cmdline, "/dev/null"])
        .current_dir(c.project.clone())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("VAST_STATE_DIR")
        .env_remove("FAILPOINTS")
        .env_remove("VAST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = script.spawn().expect("script");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"n\n").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let tty = text(&out.stdout);
    assert!(
        tty.contains(&format!(
            "Cleanup removes the results of 1 run that were never downloaded ({id})"
        )) && tty.contains("[y/N]"),
        "{tty}"
    );
    assert!(
        tty.contains("Cleanup cancelled; nothing was removed"),
        "{tty}"
    );
    assert_eq!(out.status.code(), Some(1), "{tty}");
    assert!(setup_file.is_file(), "nothing was removed");

    // A second run, downloaded outside the project: only the first one is never downloaded.
    let out = c
        .vast(&["execution", "cluster", "run", "--follow", "-r", "1"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = super::cluster_support::started_id(&text(&out.stderr), "run-");
    let elsewhere = c.tmp.path().join("elsewhere");
    let out = c
        .vast(&[
            "execution",
            "cluster",
            "download",
            "--run-id",
            &second,
            "--output",
            elsewhere.to_str().unwrap(),
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Without a terminal: proceeds, and says what was removed.
    let out = c.vast(&["execution", "cluster", "cleanup"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "Removed the results of 1 run that were never downloaded: {id}\n"
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&second),
        "{second} was downloaded: {stdout}"
    );
    assert!(!setup_file.exists());
}
