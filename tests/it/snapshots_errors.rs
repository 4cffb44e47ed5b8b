//! Snapshots of the errors of issue 15, as the user sees them (stdout and stderr of the real
//! binary against vast-sim), with the volatile parts (temporary paths, ports, run ids)
//! redacted: an unreachable cluster, an unknown context, `monitor` on an unreachable context,
//! a renamed context, `download` after `cleanup`, a `test_files_filter` pattern that matches
//! nothing, and a user's file where a run's directory goes.

use vast_sim::config::SimConfig;

use super::cluster_support::{start, text, Cluster};

/// stdout and stderr of `vast args` in the project, with `kubeconfig` if given.
async fn shown(c: &Cluster, args: &[&str], kubeconfig: Option<&std::path::Path>) -> String {
    let mut cmd = c.command(args);
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    format!(
        "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The temporary directory, the sim's port and run ids replaced by placeholders.
fn redact(c: &Cluster, s: &str, runs: &[&str]) -> String {
    let mut s = s.replace(&c.tmp.path().display().to_string(), "[TMP]");
    s = s.replace(&c.sim.url(), "http://127.0.0.1:[PORT]");
    for (i, r) in runs.iter().enumerate() {
        s = s.replace(r, &format!("[RUN{}]", i + 1));
    }
    // Run ids of runs the command started itself (`<operation>-YYYY-MM-DD-HHMMSS-xxxx`).
    let mut out = String::new();
    for line in s.lines() {
        let mut l = line.to_string();
        for op in ["download-", "setup-", "cleanup-"] {
            while let Some(i) = l.find(&format!("{op}20")) {
                let end = (i + op.len() + 22).min(l.len());
                l.replace_range(i..end, &format!("{op}[ID]"));
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn kubeconfig(c: &Cluster, name: &str, body: &str) -> std::path::PathBuf {
    let p = c.tmp.path().join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_errors() {
    let c = start(SimConfig::default()).await;
    let dead = kubeconfig(
        &c,
        "dead-kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"http://127.0.0.1:9\"}\ncontexts:\n- name: lab\n  context: {cluster: c, user: u}\n- name: other\n  context: {cluster: c, user: u}\ncurrent-context: lab\nusers:\n- name: u\n  user: {}\n",
    );
    let s = shown(&c, &["execution", "cluster", "setup", "rke2"], Some(&dead)).await;
    insta::assert_snapshot!("error_unreachable_cluster", redact(&c, &s, &[]));
    let s = shown(
        &c,
        &[
            "execution",
            "cluster",
            "setup",
            "rke2",
            "--context",
            "nosuch",
        ],
        Some(&dead),
    )
    .await;
    insta::assert_snapshot!("error_unknown_context", redact(&c, &s, &[]));
    let s = shown(
        &c,
        &[
            "execution",
            "cluster",
            "monitor",
            "--once",
            "--context",
            "lab",
        ],
        Some(&dead),
    )
    .await;
    insta::assert_snapshot!("error_monitor_unreachable", redact(&c, &s, &[]));

    // A renamed context.
    let run = c.finished_run("rke2").await;
    let kc = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let renamed = kubeconfig(
        &c,
        "renamed-kubeconfig",
        &kc.replace("name: vast-sim\n  context:", "name: local\n  context:")
            .replace("current-context: vast-sim", "current-context: local"),
    );
    let s = shown(
        &c,
        &[
            "execution",
            "cluster",
            "monitor",
            "--once",
            "--context",
            "local",
        ],
        Some(&renamed),
    )
    .await;
    insta::assert_snapshot!("error_renamed_context", redact(&c, &s, &[&run]));

    // A user's file where the run's directory goes.
    std::fs::create_dir_all(c.project.join("out")).unwrap();
    std::fs::write(c.project.join("out").join(&run), "mine").unwrap();
    let s = shown(&c, &["execution", "cluster", "download", "-o", "out"], None).await;
    insta::assert_snapshot!("error_users_file_at_run_dir", redact(&c, &s, &[&run]));
    std::fs::remove_file(c.project.join("out").join(&run)).unwrap();

    // download after cleanup.
    let out = c.vast(&["execution", "cluster", "cleanup"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = shown(&c, &["execution", "cluster", "download", "-o", "out"], None).await;
    insta::assert_snapshot!("error_download_after_cleanup", redact(&c, &s, &[&run]));

    // A test_files_filter pattern that matches nothing.
    let vast_file = c.project.join("growth_sim.vast");
    let v = std::fs::read_to_string(&vast_file).unwrap();
    std::fs::write(
        &vast_file,
        v.replace(
            "  - \"files/*.sh\"\n",
            "  - \"files/*.sh\"\n  - \"nothing/*.yaml\"\n",
        ),
    )
    .unwrap();
    let s = shown(&c, &["execution", "cluster", "run", "-r", "1"], None).await;
    insta::assert_snapshot!("error_filter_matches_nothing", redact(&c, &s, &[&run]));
}
