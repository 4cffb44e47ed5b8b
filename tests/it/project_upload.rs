//! The prepare-run upload script (python3 stdlib, SigV4 implemented in the script) against a
//! real SigV4-checking S3 server (s3s-fs), with wrong keys rejected; and through a stand-in
//! `kubectl` (Secret read, port-forward) as a user with only kubectl and python3 runs it.

use std::collections::BTreeMap;
use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use vast::manifests::cluster_config;
use vast::manifests::kueue::Quota;
use vast::manifests::prepare::{prepare_run, PrepareInput};
use vast::project::{generate, VastFile};

const AK: &str = "vast-test-ak";
const SK: &str = "vast-test-secret-key-0123456789";

async fn start_s3(root: &Path) -> String {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn run_script(script: &Path, endpoint: &str, sk: &str) -> std::process::Output {
    std::process::Command::new("python3")
        .arg(script)
        .env("S3_ENDPOINT", endpoint)
        .env("S3_ACCESS_KEY", AK)
        .env("S3_SECRET_KEY", sk)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_script_uploads_out_template_with_sigv4() {
    let tmp = tempfile::tempdir().unwrap();
    let s3_root = tmp.path().join("s3");
    std::fs::create_dir(&s3_root).unwrap();
    let endpoint = start_s3(&s3_root).await;

    let vast = VastFile::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim/growth_sim.vast"),
    )
    .unwrap();
    let configs = generate(&vast).unwrap();
    let out = tmp.path().join("prepared");
    let run_id = "run-2026-01-02-030405-up01";
    let input = PrepareInput {
        vast: &vast,
        configs: &configs,
        runs: 1,
        cluster: cluster_config("minikube").unwrap(),
        options: BTreeMap::new(),
        namespace: "default".into(),
        context: None,
        log_tree: false,
        run_id: run_id.into(),
        quota: Quota {
            cpu: 8,
            memory_gi: 32,
        },
        created_at: "2026-01-02T03:04:05Z".into(),
    };
    prepare_run(&out, &input).unwrap();
    let script = out.join("upload_configs.py");

    // Wrong secret: the server rejects the signature and the script says so, exit 1.
    let ep = endpoint.clone();
    let s = script.clone();
    let o = tokio::task::spawn_blocking(move || run_script(&s, &ep, "wrong"))
        .await
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("ERROR: creating bucket"));

    let ep = endpoint.clone();
    let s = script.clone();
    let o = tokio::task::spawn_blocking(move || run_script(&s, &ep, SK))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.starts_with(&format!(
        "Uploading config files to S3 bucket '{run_id}'...\nUpload complete."
    )));

    // Every file of out_template arrived byte for byte under the bucket.
    let template = out.join("out_template");
    let mut stack = vec![template.clone()];
    let mut count = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&template).unwrap();
            let stored = std::fs::read(s3_root.join(run_id).join(rel)).unwrap();
            assert_eq!(stored, std::fs::read(&p).unwrap(), "{}", rel.display());
            count += 1;
        }
    }
    assert!(count >= 10, "{count} files");
    // Re-running is fine (bucket exists: 409 is accepted, objects are overwritten).
    let o = tokio::task::spawn_blocking(move || run_script(&script, &endpoint, SK))
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A `kubectl` stand-in: `get secret … -o jsonpath={.data.<key>}` prints the base64 value,
/// `port-forward … <local>:9000` relays 127.0.0.1:<local> to `$STUB_TARGET`. Every call is logged.
const STUB_KUBECTL: &str = r#"#!/usr/bin/env python3
import base64, os, socket, sys, threading
args = sys.argv[1:]
with open(os.environ["KUBECTL_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
if "secret" in args:
    key = [a for a in args if a.startswith("jsonpath=")][0].split(".data.")[1].rstrip("}")
    val = {"access-key": os.environ["STUB_AK"], "secret-key": os.environ["STUB_SK"]}[key]
    print(base64.b64encode(val.encode()).decode())
    sys.exit(0)
if "port-forward" in args:
    local = int(args[-1].split(":")[0])
    host, port = os.environ["STUB_TARGET"].rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", local))
    srv.listen()
    def pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass
    while True:
        c, _ = srv.accept()
        u = socket.create_connection((host, int(port)))
        threading.Thread(target=pipe, args=(c, u), daemon=True).start()
        threading.Thread(target=pipe, args=(u, c), daemon=True).start()
sys.exit(1)
"#;

/// Someone with only kubectl and python3: the script reads the credentials from the Secret in
/// the run's namespace (with the run's context), port-forwards to the robovast service and
/// uploads; the secret never appears in its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_script_uses_kubectl_secret_and_port_forward() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let s3_root = tmp.path().join("s3");
    std::fs::create_dir(&s3_root).unwrap();
    let endpoint = start_s3(&s3_root).await;
    let vast = VastFile::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim/growth_sim.vast"),
    )
    .unwrap();
    let configs = generate(&vast).unwrap();
    let out = tmp.path().join("prepared");
    let run_id = "run-2026-01-02-030405-kc01";
    let input = PrepareInput {
        vast: &vast,
        configs: &configs,
        runs: 1,
        cluster: cluster_config("rke2").unwrap(),
        options: BTreeMap::new(),
        namespace: "sims".into(),
        context: Some("lab".into()),
        log_tree: false,
        run_id: run_id.into(),
        quota: Quota {
            cpu: 8,
            memory_gi: 32,
        },
        created_at: "2026-01-02T03:04:05Z".into(),
    };
    prepare_run(&out, &input).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("kubectl"), STUB_KUBECTL).unwrap();
    std::fs::set_permissions(bin.join("kubectl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = tmp.path().join("kubectl.log");
    let script = out.join("upload_configs.py");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target = endpoint.trim_start_matches("http://").to_string();
    let log2 = log.clone();
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .env_remove("S3_ENDPOINT")
            .env("PATH", path)
            .env("KUBECTL_LOG", &log2)
            .env("STUB_AK", AK)
            .env("STUB_SK", SK)
            .env("STUB_TARGET", target)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("Upload complete."), "{stdout}");
    assert!(
        !stdout.contains(SK) && !stderr.contains(SK),
        "secret never printed"
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains(
            "--context lab get secret vast-s3-credentials -n sims -o jsonpath={.data.secret-key}"
        ),
        "{calls}"
    );
    assert!(
        calls.contains("--context lab port-forward -n sims svc/robovast "),
        "{calls}"
    );
    assert_eq!(
        std::fs::read(s3_root.join(run_id).join("entrypoint.sh")).unwrap(),
        std::fs::read(out.join("out_template/entrypoint.sh")).unwrap()
    );
}
