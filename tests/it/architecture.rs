//! The layering invariants of ARCHITECTURE.md, checked on the source: the engine knows
//! nothing of the store, Kubernetes, S3 or sled; sled and bincode live in `state/` only;
//! `backoff` in one file of the engine; the sim's controllers and data plane never import its
//! API layer.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Lines of Rust code under `dir` (a folder or file relative to the crate root) that mention
/// `needle`,
/// outside comments.
fn uses(dir: &str, needle: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hits = Vec::new();
    for f in rust_files(&root.join(dir)) {
        let text = std::fs::read_to_string(&f).expect("read");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if code.contains(needle) {
                hits.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    hits
}

#[test]
fn the_engine_imports_no_store_cluster_s3_or_sled() {
    for needle in [
        "crate::store",
        "crate::cluster",
        "crate::ops",
        "crate::cli",
        "kube::",
        "k8s_openapi",
        "aws_sdk_s3",
        "sled::",
        "bincode",
        "vast_state",
    ] {
        let hits = uses("src/engine", needle);
        assert!(
            hits.is_empty(),
            "src/engine uses {needle}:\n{}",
            hits.join("\n")
        );
    }
}

#[test]
fn sled_bincode_and_backoff_each_live_in_one_place() {
    for needle in ["sled::", "bincode::"] {
        let hits = uses("src", needle);
        assert!(
            hits.is_empty(),
            "{needle} outside state/:\n{}",
            hits.join("\n")
        );
    }
    let backoff: Vec<String> = uses("src", "backoff::")
        .into_iter()
        .filter(|h| !h.contains("src/engine/retry.rs"))
        .collect();
    assert!(
        backoff.is_empty(),
        "backoff outside engine/retry.rs:\n{}",
        backoff.join("\n")
    );
}

#[test]
fn the_sim_controllers_and_data_plane_never_import_its_api() {
    for dir in ["sim/src/controllers", "sim/src/dataplane"] {
        let hits = uses(dir, "crate::api");
        assert!(
            hits.is_empty(),
            "{dir} imports the API layer:\n{}",
            hits.join("\n")
        );
    }
}

#[test]
fn the_ops_base_imports_no_operation_and_lower_layers_import_no_ops() {
    let hits: Vec<String> = uses("src/ops/base.rs", "super::")
        .into_iter()
        .chain(
            uses("src/ops/base.rs", "crate::ops::")
                .into_iter()
                .filter(|h| !h.contains("crate::ops::base::")),
        )
        .collect();
    assert!(
        hits.is_empty(),
        "ops/base.rs imports an operation:\n{}",
        hits.join("\n")
    );
    for dir in [
        "src/cluster",
        "src/project",
        "src/manifests",
        "src/results",
        "src/share",
        "src/pod",
        "src/store",
    ] {
        for needle in ["crate::ops", "crate::cli"] {
            let hits = uses(dir, needle);
            assert!(hits.is_empty(), "{dir} uses {needle}:\n{}", hits.join("\n"));
        }
    }
}
