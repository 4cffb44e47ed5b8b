//! The prepare-run upload script (python3 stdlib, SigV4 implemented in the script) against a
//! real SigV4-checking S3 server (s3s-fs), with wrong keys rejected.

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
