//! `prepare-run`'s READMEs followed exactly as a user would, against the simulated cluster: every
//! ```bash block of `README_kueue.md`, `README_rke2.md` and `README.md` run in order with bash
//! and the real `kubectl` (`kubectl create secret generic`, `apply`, `wait`, the generated
//! `./upload_configs.py` through `kubectl port-forward svc/robovast`, `kubectl apply -f
//! all-jobs.yaml`), then the Jobs must complete and their results be in the run's bucket. Only
//! `helm install` is skipped: the simulated cluster has Kueue built in.

use std::path::Path;
use std::time::Duration;

use vast_sim::config::SimConfig;

use crate::cluster_support::{start, text, Cluster};

/// The ```bash blocks of a markdown file, in order.
fn bash_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        let t = line.trim_start();
        match (&mut current, t) {
            (None, "```bash") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), _) => {
                b.push_str(t);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

async fn bash(c: &Cluster, dir: &Path, script: &str) -> (bool, String) {
    let kubectl_home = c.tmp.path().join("home");
    std::fs::create_dir_all(&kubectl_home).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(dir)
            .env("KUBECONFIG", &c.kubeconfig)
            .env("HOME", &kubectl_home)
            .output(),
    )
    .await
    .expect("the README's commands finish")
    .expect("bash runs");
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_run_readmes_work_as_written() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("skipped: kubectl is not installed (.ci/run installs it)");
        return;
    }
    let mut config = SimConfig::default();
    config.pods.job_duration_ms = 100;
    let c = start(config).await;
    let out = c
        .vast(&[
            "execution",
            "cluster",
            "prepare-run",
            "out",
            "-k",
            "rke2",
            "-r",
            "1",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = c.project.join("out");
    let mut log = String::new();
    for readme in ["README_kueue.md", "README_rke2.md", "README.md"] {
        let md = std::fs::read_to_string(dir.join(readme)).expect("README written");
        let blocks = bash_blocks(&md);
        assert!(!blocks.is_empty(), "{readme} has no bash block");
        for block in blocks {
            if block.trim_start().starts_with("helm install") {
                continue; // the simulated cluster has Kueue built in
            }
            if block.contains("upload-configs") {
                continue; // the "only vast" alternative of ./upload_configs.py
            }
            let (ok, output) = bash(&c, &dir, &block).await;
            log.push_str(&format!("$ {block}{output}\n"));
            assert!(ok, "{readme}: a command failed:\n{log}");
        }
    }
    // The Jobs run to completion, as kubectl sees them.
    let run_id = std::fs::read_to_string(dir.join("README.md"))
        .expect("README")
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# vast run "))
        .map(str::to_string)
        .expect("the README names the run");
    let wait = format!(
        "kubectl wait -n default --for=condition=complete job -l run-id={run_id} --timeout=120s"
    );
    let (ok, output) = bash(&c, &dir, &wait).await;
    assert!(ok, "{log}\n$ {wait}\n{output}");
    assert_eq!(output.matches("condition met").count(), 5, "{output}");
    // Every configuration's run wrote its results into the run's bucket.
    let bucket = c.bucket(&run_id).await;
    for config in [
        "test-1-1",
        "test-1-2",
        "test-2-1",
        "test-2-2",
        "test-fixed-values",
    ] {
        assert!(
            bucket
                .keys()
                .any(|k| k.starts_with(&format!("{config}/0/"))),
            "no results of {config} in {:?}",
            bucket.keys().collect::<Vec<_>>()
        );
    }
    // The configurations uploaded by ./upload_configs.py are there too.
    assert!(
        bucket.keys().any(|k| k.starts_with("_config/")),
        "{:?}",
        bucket.keys().collect::<Vec<_>>()
    );
}

#[test]
fn bash_blocks_are_read_in_order() {
    let md = "x\n```bash\na\nb\n```\ntext\n   ```bash\n   c\n   ```\n```yaml\nno\n```\n";
    assert_eq!(
        bash_blocks(md),
        vec!["a\nb\n".to_string(), "c\n".to_string()]
    );
}
