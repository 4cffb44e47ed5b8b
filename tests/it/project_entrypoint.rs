//! Our cluster entrypoint script run under bash with stub `ros2` and `mc`: `/out` is uploaded
//! whatever the outcome (success, scenario failure, missing PRE_COMMAND), and a failed upload
//! fails the container. The Jobs' `s3-init` script with a stub `mc`: every required file is
//! fetched, and a missing one fails the init container with a message naming it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use vast::project::template::{entrypoint_script, Mode};

struct Outcome {
    code: Option<i32>,
    mc_log: String,
    ros2_args: String,
    system_log: String,
}

fn stub(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(ros2_exit: i32, mc_exit: i32, pre_command: Option<&str>) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let (config, out, bin) = (
        tmp.path().join("config"),
        tmp.path().join("out"),
        tmp.path().join("bin"),
    );
    for d in [&config, &out, &bin] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(
        config.join("entrypoint.sh"),
        entrypoint_script(Mode::Cluster),
    )
    .unwrap();
    std::fs::write(
        config.join("collect_sysinfo.py"),
        include_str!("../../src/project/scripts/collect_sysinfo.py"),
    )
    .unwrap();
    std::fs::write(config.join("scenario.osc"), "scenario s:\n").unwrap();
    std::fs::write(config.join("scenario.config"), "s: {a: 1}\n").unwrap();
    std::fs::write(config.join("pre.sh"), "echo pre-command-ran\n").unwrap();
    let log = tmp.path().join("mc.log");
    stub(
        &bin.join("mc"),
        &format!("echo \"$@\" >> '{}'\nexit {mc_exit}", log.display()),
    );
    stub(
        &bin.join("ros2"),
        &format!("echo \"$@\" > \"$VAST_OUT_DIR/ros2_args\"\necho result > \"$VAST_OUT_DIR/test.xml\"\nexit {ros2_exit}"),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(config.join("entrypoint.sh"))
        .env_clear()
        .env("PATH", path)
        .env("HOME", tmp.path())
        .env("VAST_OUT_DIR", &out)
        .env("VAST_CONFIG_DIR", &config)
        .env("ENABLE_X11", "false")
        .env("S3_ENDPOINT", "http://robovast:9000")
        .env("S3_BUCKET", "run-x")
        .env("S3_PREFIX", "cfg/0")
        .env("S3_ACCESS_KEY", "ak")
        .env("S3_SECRET_KEY", "s3cr3t-value");
    if let Some(p) = pre_command {
        cmd.env("PRE_COMMAND", config.join(p));
    }
    let o = cmd.output().unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Outcome {
        code: o.status.code(),
        mc_log: read(&log),
        ros2_args: read(&out.join("ros2_args")),
        system_log: read(&out.join("logs/system.log")),
    }
}

#[test]
fn success_uploads_and_passes_parameters() {
    let o = run(0, 0, Some("pre.sh"));
    assert_eq!(o.code, Some(0), "{}", o.system_log);
    assert!(
        o.mc_log
            .contains("alias set vast http://robovast:9000 ak s3cr3t-value"),
        "{}",
        o.mc_log
    );
    assert!(
        o.mc_log.contains("mirror --overwrite --quiet") && o.mc_log.contains("vast/run-x/cfg/0/"),
        "{}",
        o.mc_log
    );
    assert!(
        o.ros2_args
            .starts_with("run scenario_execution_ros scenario_execution_ros -o"),
        "{}",
        o.ros2_args
    );
    assert!(
        o.ros2_args.contains("--scenario-parameter-file"),
        "{}",
        o.ros2_args
    );
    assert!(o.system_log.contains("pre-command-ran"), "{}", o.system_log);
    assert!(
        !o.system_log.contains("s3cr3t-value"),
        "secret key never logged"
    );
}

#[test]
fn scenario_failure_still_uploads_and_keeps_exit_status() {
    let o = run(3, 0, None);
    assert_eq!(o.code, Some(3));
    assert!(o.mc_log.contains("mirror"), "{}", o.mc_log);
}

#[test]
fn missing_pre_command_fails_but_uploads_logs() {
    let o = run(0, 0, Some("missing.sh"));
    assert_eq!(o.code, Some(1));
    assert!(o.system_log.contains("PRE_COMMAND"), "{}", o.system_log);
    assert!(o.mc_log.contains("mirror"), "{}", o.mc_log);
    assert!(o.ros2_args.is_empty(), "scenario not started");
}

#[test]
fn failed_upload_fails_the_container() {
    let o = run(0, 1, None);
    assert_eq!(o.code, Some(vast::manifests::job::EXIT_UPLOAD_FAILED));
    // A failed scenario keeps its own status even when the upload fails too.
    let o = run(3, 1, None);
    assert_eq!(o.code, Some(3));
}

/// The Jobs' `s3-init` script (paths under `/config` redirected to a temp dir) with a stub `mc`
/// serving a fake bucket directory: (exit code, stderr, the config dir).
fn run_init(
    params: bool,
    missing: &[&str],
) -> (Option<i32>, String, tempfile::TempDir, std::path::PathBuf) {
    use vast::manifests::job::init_script;
    let tmp = tempfile::tempdir().unwrap();
    let (bucket, config, bin) = (
        tmp.path().join("s3/run-x"),
        tmp.path().join("config"),
        tmp.path().join("bin"),
    );
    for d in [&bucket, &config, &bin] {
        std::fs::create_dir_all(d).unwrap();
    }
    for f in [
        "entrypoint.sh",
        "secondary_entrypoint.sh",
        "collect_sysinfo.py",
        "scenario.osc",
        "_config/configurations.yaml",
        "_config/files/setup.sh",
        "cfg-1/scenario.config",
    ] {
        if missing.contains(&f) {
            continue;
        }
        let p = bucket.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f).unwrap();
    }
    // `mc alias set …` succeeds; `mc cp --quiet vast/<key> <dest>` and `mc mirror --quiet
    // vast/<prefix>/ <dest>` read from the bucket directory and fail like mc when it is absent.
    stub(
        &bin.join("mc"),
        &format!(
            "root='{}'\ncase \"$1\" in\n  alias) exit 0;;\n  cp) src=\"$root/${{3#vast/}}\"; [ -f \"$src\" ] || {{ echo \"mc: Object does not exist\" >&2; exit 1; }}; cp \"$src\" \"$4\";;\n  mirror) src=\"$root/${{3#vast/}}\"; [ -d \"$src\" ] || {{ echo \"mc: not found\" >&2; exit 1; }}; cp -r \"$src\". \"$4\";;\nesac",
            tmp.path().join("s3").display()
        ),
    );
    let c = vast::project::Configuration {
        name: "cfg-1".into(),
        entry: "cfg".into(),
        parameters: if params {
            vec![("speed".into(), serde_yaml::Value::from(2))]
        } else {
            Vec::new()
        },
    };
    let script = init_script(&c).replace("/config/", &format!("{}/", config.display()));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", path)
        .env("S3_ENDPOINT", "http://robovast:9000")
        .env("S3_BUCKET", "run-x")
        .env("S3_ACCESS_KEY", "ak")
        .env("S3_SECRET_KEY", "sk")
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).to_string(),
        tmp,
        config,
    )
}

#[test]
fn init_container_fetches_everything() {
    let (code, err, _tmp, config) = run_init(true, &[]);
    assert_eq!(code, Some(0), "{err}");
    for f in [
        "entrypoint.sh",
        "secondary_entrypoint.sh",
        "collect_sysinfo.py",
        "scenario.osc",
        "configurations.yaml",
        "files/setup.sh",
        "scenario.config",
    ] {
        assert!(config.join(f).is_file(), "{f} fetched");
    }
    // Without parameters there is no scenario.config to fetch, and none is required.
    let (code, err, _tmp, config) = run_init(false, &["cfg-1/scenario.config"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!config.join("scenario.config").exists());
}

/// Upstream's init container swallowed every error (`|| true`); ours names the missing file.
#[test]
fn init_container_fails_loudly_on_a_missing_file() {
    for (missing, want) in [
        (
            "scenario.osc",
            "vast: required file s3://run-x/scenario.osc is missing or unreadable",
        ),
        (
            "entrypoint.sh",
            "vast: required file s3://run-x/entrypoint.sh is missing or unreadable",
        ),
        (
            "cfg-1/scenario.config",
            "vast: required file s3://run-x/cfg-1/scenario.config is missing or unreadable",
        ),
    ] {
        let (code, err, _tmp, _) = run_init(true, &[missing]);
        assert_eq!(code, Some(1), "missing {missing}: {err}");
        assert!(err.contains(want), "missing {missing}: {err}");
    }
}
