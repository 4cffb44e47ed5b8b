//! Pre-flight failures (unknown context, unreachable cluster) are configuration problems, not
//! runs to resume: no workflow command creates a persisted run for them, and each says why in
//! one line that names the context.

use std::collections::BTreeSet;

use vast_sim::config::SimConfig;

use super::cluster_support::{start, text, Cluster};

/// The persisted runs of the project's state directory.
fn runs(c: &Cluster) -> BTreeSet<String> {
    std::fs::read_dir(c.state.join("runs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The sim's kubeconfig plus a context `dead` whose server refuses connections.
fn with_dead_context(c: &Cluster) {
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- {{name: vast-sim, cluster: {{server: '{}'}}}}\n- {{name: dead, cluster: {{server: 'http://127.0.0.1:9'}}}}\ncontexts:\n- {{name: vast-sim, context: {{cluster: vast-sim, user: u, namespace: default}}}}\n- {{name: dead, context: {{cluster: dead, user: u}}}}\ncurrent-context: vast-sim\nusers:\n- {{name: u, user: {{}}}}\n",
        c.sim.url()
    );
    std::fs::write(&c.kubeconfig, kc).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_failures_never_create_a_resumable_run() {
    let c = start(SimConfig::default()).await;
    let run = c.finished_run("rke2").await;
    with_dead_context(&c);
    let before = runs(&c);
    assert!(
        !before.is_empty(),
        "the finished run and its setup are persisted"
    );
    let out_dir = c.tmp.path().join("out");
    let out_dir = out_dir.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["execution", "cluster", "setup", "rke2"],
        vec!["execution", "cluster", "run", "-r", "1"],
        vec!["execution", "cluster", "download", "--output", out_dir],
        vec!["execution", "cluster", "cleanup"],
        vec![
            "execution",
            "cluster",
            "cleanup",
            "--cluster-config",
            "rke2",
        ],
        vec!["execution", "cluster", "run-cleanup"],
        vec!["execution", "cluster", "download-cleanup"],
        vec!["execution", "cluster", "upload-to-share"],
        vec!["execution", "cluster", "rerun", run.as_str()],
    ];
    for ctx in ["dead", "nosuch"] {
        for args in &commands {
            let mut a = args.clone();
            a.extend(["--context", ctx]);
            let mut cmd = c.command(&a);
            // upload-to-share checks its share configuration first: give it a complete one.
            cmd.env("ROBOVAST_SHARE_TYPE", "localdir")
                .env(
                    "VAST_SHARE_PROVIDERS_PATH",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/share-providers"),
                )
                .env("LOCALDIR_TARGET", c.tmp.path().join("share"));
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            let what = format!("vast {}", a.join(" "));
            assert!(
                !out.status.success(),
                "{what} succeeded:\n{stdout}\n{stderr}"
            );
            assert_eq!(
                runs(&c),
                before,
                "{what} created a run:\n{stdout}\n{stderr}"
            );
            assert!(
                !stderr.contains("vast resume"),
                "{what}: nothing to resume:\n{stderr}"
            );
            assert!(
                stderr.contains(&format!("'{ctx}'")),
                "{what}: the error names the context:\n{stderr}"
            );
        }
    }
}

/// After `kubectl config rename-context vast-sim local`, the saved setup of `vast-sim` is not
/// lost silently: `monitor`, `run` and `download` on `local` say which file to rename (exit 2),
/// and after the rename they find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_context_says_how_to_reassociate_its_setup() {
    let c = start(SimConfig::default()).await;
    c.setup_cli("rke2").await;
    let kc = std::fs::read_to_string(&c.kubeconfig).unwrap();
    std::fs::write(
        &c.kubeconfig,
        kc.replace("name: vast-sim\n  context:", "name: local\n  context:")
            .replace("current-context: vast-sim", "current-context: local"),
    )
    .unwrap();
    let before = runs(&c);
    for args in [
        vec![
            "execution",
            "cluster",
            "monitor",
            "--once",
            "--context",
            "local",
        ],
        vec!["execution", "cluster", "monitor", "--once"],
        vec![
            "execution",
            "cluster",
            "run",
            "-r",
            "1",
            "--context",
            "local",
        ],
        vec!["execution", "cluster", "download"],
    ] {
        let out = c.vast(&args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let old = c.project.join(".robovast_cluster_config.vast-sim");
        let new = c.project.join(".robovast_cluster_config.local");
        assert!(
            stderr.contains(&format!("mv {} {}", old.display(), new.display()))
                && stderr.contains("belongs to context 'vast-sim'")
                && stderr.contains("vast execution cluster setup <cluster-config> --context local"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(runs(&c), before);
    std::fs::rename(
        c.project.join(".robovast_cluster_config.vast-sim"),
        c.project.join(".robovast_cluster_config.local"),
    )
    .unwrap();
    let out = c
        .vast(&[
            "execution",
            "cluster",
            "monitor",
            "--once",
            "--context",
            "local",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.vast(&["execution", "cluster", "run", "-r", "1"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}
