//! `vast --version` (with the git commit), `vast completion <shell>` (bash checked with
//! `bash -n`) and `vast man` (one page, or a page per command with `--out`).

use std::process::Command;

const VAST: &str = env!("CARGO_BIN_EXE_vast");

fn vast(args: &[&str]) -> std::process::Output {
    Command::new(VAST)
        .args(args)
        .env_remove("VAST_LOG")
        .output()
        .expect("spawn vast")
}

#[test]
fn version_names_the_commit() {
    let out = vast(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = text
        .trim()
        .strip_prefix(&format!("vast {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected version line {text:?}"));
    assert!(
        rest == "unknown" || (rest.len() >= 7 && rest.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text:?}"
    );
}

#[test]
fn completions_are_generated_for_every_shell_and_bash_parses_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = vast(&["completion", shell]);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            script.contains("execution") && script.contains("resume"),
            "{shell}"
        );
        if shell == "bash" {
            let f = tmp.path().join("vast.bash");
            std::fs::write(&f, &script).expect("write");
            let check = Command::new("bash")
                .arg("-n")
                .arg(&f)
                .output()
                .expect("bash");
            assert!(
                check.status.success(),
                "{}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
    let out = vast(&["completion", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_cover_every_visible_command() {
    let out = vast(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH vast") && page.contains("resume"),
        "{page}"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("man1");
    let out = vast(&["man", "--out", dir.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "vast.1",
        "vast-resume.1",
        "vast-execution-cluster-run.1",
        "vast-execution-cluster-download.1",
        "vast-runs-show.1",
    ] {
        let p = dir.join(page);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    assert!(
        !dir.join("vast-selftest.1").exists(),
        "hidden commands get no page"
    );
}
