//! Our cluster entrypoint script run under bash with stub `ros2` and `mc`: `/out` is uploaded
//! whatever the outcome (success, scenario failure, missing PRE_COMMAND), and a failed upload
//! fails the container.

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
    assert_eq!(o.code, Some(1));
}
