//! The pod-side Python scripts' own tests (`tests/pod/`, unittest): the detached runner, the
//! archiver's S3 client and signer, the Nextcloud and Google Drive uploads against a real
//! WebDAV server (wsgidav) and the fakes in `tests/fixtures/`.

use std::process::Command;

#[test]
fn python_unittests_of_the_pod_scripts_pass() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests/pod", "-v"])
        .current_dir(root)
        .output()
        .expect("python3 runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python unittests failed:\n{err}");
    // Skips would hide a missing dependency that .ci/run must install.
    assert!(
        !err.contains("skipped"),
        "some pod-script tests were skipped (a test dependency is missing):\n{err}"
    );
}
