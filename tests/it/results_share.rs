//! `vast execution cluster upload-to-share` end to end with the real binary against vast-sim:
//! a real WebDAV server (wsgidav, Nextcloud's legacy public-share endpoint), the fake Google
//! Drive of `tests/fixtures/fake_gdrive.py` (service account with a throwaway RSA key, JWT
//! signatures verified), the example plugin `examples/share-providers/localdir` found through
//! `VAST_SHARE_PROVIDERS_PATH` and `<project>/.vast/share-providers`, the configuration
//! errors (exit 2, no cluster access), a 256 MiB upload surviving SIGKILLs of vast and a
//! restart of the robovast pod, and secrets that never reach vast's output, its state
//! directory or `vast runs show`.
//!
//! The pod's scripts run as host processes (sim/docs/dataplane.md, Exec), so the servers the
//! tests start on 127.0.0.1 are reachable from them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vast_sim::config::SimConfig;

use super::cluster_support::{sha256, start, started_id, text, Cluster, NS};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MIB: u64 = 1024 * 1024;
/// Share token of the Nextcloud tests (mixed case: wsgidav's user names keep it).
const TOKEN: &str = "Vt7kQ2xLmN9pRs4W";
const SHARE_PASSWORD: &str = "pw-Zq81-secret";
const FOLDER: &str = "1FoLdEr_vast-test-0123456789";

/// Every variable the command reads, removed from the inherited environment.
const SHARE_VARS: &[&str] = &[
    "ROBOVAST_SHARE_TYPE",
    "ROBOVAST_SHARE_URL",
    "ROBOVAST_SHARE_PASSWORD",
    "ROBOVAST_GDRIVE_SERVICE_ACCOUNT_JSON",
    "ROBOVAST_GDRIVE_API_BASE",
    "VAST_SHARE_CHUNK_SIZE",
    "VAST_SHARE_PROVIDERS_PATH",
    "LOCALDIR_TARGET",
];

// ------------------------------------------------------------------------------ helpers

/// A server subprocess, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `cmd` (which writes its port to `port_file`, atomically) and waits for the port.
async fn spawn_server(mut cmd: Command, port_file: &Path, log: &Path) -> Server {
    let f = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    let mut child = cmd.spawn().expect("python3 starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(port) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Server {
                child,
                port,
                log: log.to_path_buf(),
            };
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "server exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// wsgidav serving `root` as Nextcloud's legacy public-share WebDAV endpoint
/// (`/public.php/webdav`, basic auth `<token>:<password>`), as shared/design/testinfra.md §4.
const WSGIDAV_SERVER: &str = r#"
import os, sys
from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp
root, token, password, port_file = sys.argv[1:5]
app = WsgiDAVApp({
    "host": "127.0.0.1", "port": 0,
    "provider_mapping": {"/public.php/webdav": root},
    "http_authenticator": {"domain_controller": None, "accept_basic": True,
                           "accept_digest": False, "default_to_digest": False},
    "simple_dc": {"user_mapping": {"*": {token: {"password": password}}}},
    "verbose": 0, "logging": {"enable": False},
})
server = wsgi.Server(("127.0.0.1", 0), app)
server.prepare()
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.bind_addr[1]))
os.replace(port_file + ".tmp", port_file)
server.serve()
"#;

async fn wsgidav(dir: &Path, root: &Path, password: &str) -> Server {
    std::fs::create_dir_all(root).unwrap();
    let port_file = dir.join("wsgidav.port");
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(WSGIDAV_SERVER)
        .arg(root)
        .arg(TOKEN)
        .arg(password)
        .arg(&port_file);
    spawn_server(cmd, &port_file, &dir.join("wsgidav.log")).await
}

/// A throwaway RSA key: (private key PEM, path of the public key PEM).
fn rsa_key(dir: &Path) -> (String, PathBuf) {
    let script = r#"
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
open(sys.argv[1], "wb").write(k.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
open(sys.argv[2], "wb").write(k.public_key().public_bytes(serialization.Encoding.PEM,
    serialization.PublicFormat.SubjectPublicKeyInfo))
"#;
    let (private, public) = (dir.join("sa.key.pem"), dir.join("sa.pub.pem"));
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&private)
        .arg(&public)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "key generation (needs python cryptography): {}",
        text(&out.stderr)
    );
    (std::fs::read_to_string(&private).unwrap(), public)
}

/// The fake Drive (signatures checked with the key) and a service-account JSON whose
/// token_uri points at it: (server, JSON path, private key PEM).
async fn fake_drive(c: &Cluster) -> (Server, PathBuf, String) {
    let dir = c.tmp.path().join("gdrive");
    std::fs::create_dir_all(&dir).unwrap();
    let (private_pem, public) = rsa_key(&dir);
    let port_file = dir.join("port");
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{ROOT}/tests/fixtures/fake_gdrive.py"))
        .arg("--root")
        .arg(dir.join("files"))
        .arg("--port-file")
        .arg(&port_file)
        .arg("--verify-key")
        .arg(&public);
    let server = spawn_server(cmd, &port_file, &dir.join("log")).await;
    let sa = json!({
        "type": "service_account",
        "project_id": "vast-test",
        "private_key_id": "0123456789abcdef",
        "private_key": private_pem,
        "client_email": "vast-uploader@vast-test.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": format!("http://127.0.0.1:{}/token", server.port),
    });
    let sa_path = dir.join("service-account.json");
    std::fs::write(&sa_path, serde_json::to_vec_pretty(&sa).unwrap()).unwrap();
    (server, sa_path, private_pem)
}

/// One HTTP/1.1 request to a local server: (status, body).
async fn http(port: u16, method: &str, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = text(&out[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out[split + 4..].to_vec())
}

async fn drive_json(port: u16, method: &str, path: &str) -> Value {
    let (status, body) = http(port, method, path).await;
    assert_eq!(status, 200, "{method} {path}: {}", text(&body));
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// The real binary with `args` and exactly the share variables `env` (the inherited ones
/// removed; no user plugin directory).
fn with_env(c: &Cluster, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = c.command(args);
    for k in SHARE_VARS {
        cmd.env_remove(k);
    }
    cmd.env("XDG_CONFIG_HOME", c.tmp.path().join("xdg"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn upload_cmd(c: &Cluster, flags: &[&str], env: &[(&str, &str)]) -> Command {
    let mut args = vec!["execution", "cluster", "upload-to-share"];
    args.extend_from_slice(flags);
    with_env(c, &args, env)
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn vast"))
        .await
        .unwrap()
}

fn archive_of(c: &Cluster, run: &str) -> PathBuf {
    c.pod_data().join("archives").join(format!("{run}.tar.gz"))
}

/// A directory the archiver container can write, as (its path in the pod, its host path): in
/// the pod's data volume where exec sees the pod's filesystem, else a host directory.
fn pod_target(c: &Cluster, name: &str) -> (String, PathBuf) {
    if vast_sim::dataplane::exec_isolated() {
        (format!("/data/{name}"), c.pod_data().join(name))
    } else {
        let host = c.tmp.path().join(name);
        (host.display().to_string(), host)
    }
}

fn bucket_dir(c: &Cluster, run: &str) -> PathBuf {
    c.pod_data().join("minio").join(run)
}

fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// The regular files of a tar.gz: member name → SHA-256 of its content.
fn members(tgz: &Path) -> BTreeMap<String, String> {
    let f = std::fs::File::open(tgz).unwrap_or_else(|e| panic!("{}: {e}", tgz.display()));
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut h = Sha256::new();
        std::io::copy(&mut e, &mut h).unwrap();
        out.insert(name, hex::encode(h.finalize()));
    }
    out
}

/// What the archive of `bucket` must hold: `<bucket>/<key>` → SHA-256.
fn expected_members(bucket: &str, objects: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    objects
        .iter()
        .map(|(k, v)| (format!("{bucket}/{k}"), sha256(v)))
        .collect()
}

async fn share_secret_exists(c: &Cluster) -> bool {
    let secrets: Api<Secret> = Api::namespaced(c.client(), NS);
    secrets.get_opt("vast-share").await.unwrap().is_some()
}

/// Every file under `dir` (recursively), with its bytes.
fn files_under(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// None of `secrets` in `outputs`, in any file of the state directory, nor in
/// `vast runs show <id>` (text and JSON) and `vast runs events <id>`.
async fn assert_no_secrets(c: &Cluster, id: &str, outputs: &[&[u8]], secrets: &[(&str, String)]) {
    let mut places: Vec<(String, Vec<u8>)> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("output #{i}"), o.to_vec()))
        .collect();
    for args in [
        vec!["runs", "show", id],
        vec!["runs", "show", id, "--json"],
        vec!["runs", "events", id],
    ] {
        let out = c.vast(&args).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        places.push((format!("`vast {}` stdout", args.join(" ")), out.stdout));
        places.push((format!("`vast {}` stderr", args.join(" ")), out.stderr));
    }
    let mut state = Vec::new();
    files_under(&c.state, &mut state);
    assert!(
        !state.is_empty(),
        "no state files under {}",
        c.state.display()
    );
    for (p, b) in state {
        places.push((p.display().to_string(), b));
    }
    for (what, secret) in secrets {
        assert!(secret.len() >= 8, "{what} is too short to search for");
        for (place, bytes) in &places {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{what} leaked into {place}"
            );
        }
    }
}

/// Lines of a PEM key's base64 body (each one a secret worth searching for).
fn pem_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .map(String::from)
        .collect()
}

// -------------------------------------------------------------------------------- tests

/// Nextcloud against wsgidav: with `--keep-archive --skip-removal` the upload equals the
/// pod's archive, which holds exactly the bucket's objects, and both stay; without them the
/// kept archive is reused, uploaded again, and the archive, the bucket and the share Secret
/// are gone. Neither the share token nor the password shows anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextcloud_upload_to_wsgidav_keeps_or_removes_the_remote_copy() {
    let c = start(SimConfig::default()).await;
    let id = c.finished_run("rke2").await;
    let objects = c.bucket(&id).await;
    assert!(objects.len() > 5, "{:?}", objects.keys());
    let dav_root = c.tmp.path().join("dav-root");
    let dav = wsgidav(c.tmp.path(), &dav_root, SHARE_PASSWORD).await;
    let url = format!("http://127.0.0.1:{}/s/{TOKEN}", dav.port);
    // The password comes from the project's .env, the rest from the environment.
    std::fs::write(
        c.project.join(".env"),
        format!("# share\nROBOVAST_SHARE_PASSWORD=\"{SHARE_PASSWORD}\"\n"),
    )
    .unwrap();
    let env = [
        ("ROBOVAST_SHARE_TYPE", "nextcloud"),
        ("ROBOVAST_SHARE_URL", url.as_str()),
    ];

    // A wrong password (the environment wins over .env): the share refuses, the script is
    // started three times, the run is reported failed (exit 1), and nothing is removed.
    let mut bad_env = env.to_vec();
    bad_env.push(("ROBOVAST_SHARE_PASSWORD", "not-the-password"));
    let failed = output(upload_cmd(&c, &[], &bad_env)).await;
    let stdout = text(&failed.stdout);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&failed.stderr)
    );
    assert!(
        stdout.contains(&format!("{id}  FAILED: upload FAILED (exit code 1): ERROR: HTTP 401 uploading {id}.tar.gz to Nextcloud")),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("\n✗ Upload of 1 of 1 run to nextcloud failed\n"),
        "{stdout}"
    );
    assert!(
        archive_of(&c, &id).is_file(),
        "a failed upload keeps the archive"
    );
    assert_eq!(
        c.bucket(&id).await,
        objects,
        "a failed upload keeps the bucket"
    );
    assert!(std::fs::read_dir(&dav_root).unwrap().next().is_none());
    assert!(!share_secret_exists(&c).await);

    let t0 = Instant::now();
    let first = output(upload_cmd(
        &c,
        &["--keep-archive", "--skip-removal", "--force"],
        &env,
    ))
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let (stdout, stderr) = (text(&first.stdout), text(&first.stderr));
    assert!(first.status.success(), "{stdout}\n{stderr}\n{}", dav.log());
    for line in [
        format!(
            "Share target (nextcloud): http://127.0.0.1:{}/s/***\n",
            dav.port
        ),
        "Uploading 1 run to nextcloud...\n".to_string(),
        format!("{id}  streaming S3 to tar.gz...\n"),
        format!("{id}  compressed to {id}.tar.gz ("),
        format!("{id}  uploading to Nextcloud...\n"),
        format!("{id}  uploaded ("),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in:\n{stdout}");
    }
    assert!(
        stdout.ends_with("\n✓ Uploaded 1 run to nextcloud successfully!\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("removed"), "{stdout}");
    let uploaded = dav_root.join(format!("{id}.tar.gz"));
    let archive = archive_of(&c, &id);
    assert!(
        archive.is_file(),
        "--keep-archive keeps {}",
        archive.display()
    );
    assert_eq!(sha256_file(&uploaded), sha256_file(&archive));
    assert_eq!(members(&uploaded), expected_members(&id, &objects));
    assert_eq!(
        c.bucket(&id).await,
        objects,
        "--skip-removal keeps the bucket"
    );
    assert!(
        !share_secret_exists(&c).await,
        "the share Secret is deleted at the end"
    );
    let size = std::fs::metadata(&uploaded).unwrap().len();
    eprintln!(
        "nextcloud: {} objects, archive {size} bytes, upload-to-share took {secs:.1} s",
        objects.len()
    );

    // Again, without the flags: the kept archive is reused and uploaded again (the share's
    // copy was removed), then the archive and the bucket are removed.
    std::fs::remove_file(&uploaded).unwrap();
    let second = output(upload_cmd(&c, &[], &env)).await;
    let stdout2 = text(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout2}\n{}",
        text(&second.stderr)
    );
    for line in [
        format!("{id}  reusing the existing remote archive\n"),
        format!("{id}  uploaded ("),
        format!("{id}  remote archive and bucket removed\n"),
        "✓ Uploaded 1 run to nextcloud successfully!\n".to_string(),
    ] {
        assert!(stdout2.contains(&line), "{line:?} not in:\n{stdout2}");
    }
    assert!(!stdout2.contains("streaming S3"), "{stdout2}");
    assert_eq!(members(&uploaded), expected_members(&id, &objects));
    assert!(!archive.exists(), "the archive is removed");
    assert!(!bucket_dir(&c, &id).exists(), "the bucket is removed");
    assert!(c.bucket(&id).await.is_empty());
    assert!(!share_secret_exists(&c).await);

    // Nothing left to upload.
    let third = output(upload_cmd(&c, &[], &env)).await;
    assert!(third.status.success(), "{}", text(&third.stderr));
    assert!(
        text(&third.stdout).contains("No runs found to upload."),
        "{}",
        text(&third.stdout)
    );

    let share_id = started_id(&text(&second.stderr), "upload-to-share-");
    let basic = base64_encode(format!("{TOKEN}:{SHARE_PASSWORD}").as_bytes());
    assert_no_secrets(
        &c,
        &share_id,
        &[&first.stdout, &first.stderr, &second.stdout, &second.stderr],
        &[
            ("the share token", TOKEN.to_string()),
            ("the share password", SHARE_PASSWORD.to_string()),
            ("the basic credentials", basic),
        ],
    )
    .await;
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Google Drive against the fake: the service account's JWT is signed with the throwaway
/// key (verified by the fake), the file lands in the folder named by the share URL with the
/// bucket's objects, the archive's SHA-256 as recorded by the run, and neither the private
/// key, the signed assertion nor the access token shows anywhere (even at `-vv`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdrive_upload_to_the_fake_drive_leaks_no_secret() {
    let c = start(SimConfig::default()).await;
    let id = c.finished_run("rke2").await;
    let objects = c.bucket(&id).await;
    // A second finished run: both are uploaded.
    let out = c
        .vast(&["execution", "cluster", "run", "--follow", "-r", "1"])
        .await;
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    let id2 = started_id(&text(&out.stderr), "run-");
    let objects2 = c.bucket(&id2).await;
    let (drive, sa, private_pem) = fake_drive(&c).await;
    let api = format!("http://127.0.0.1:{}", drive.port);
    let url = format!("https://drive.google.com/drive/folders/{FOLDER}?usp=sharing");
    let sa_s = sa.display().to_string();
    let env = [
        ("ROBOVAST_SHARE_TYPE", "gdrive"),
        ("ROBOVAST_SHARE_URL", url.as_str()),
        ("ROBOVAST_GDRIVE_SERVICE_ACCOUNT_JSON", sa_s.as_str()),
        ("ROBOVAST_GDRIVE_API_BASE", api.as_str()),
        ("VAST_SHARE_CHUNK_SIZE", "262144"),
    ];
    let out = output(upload_cmd(&c, &["-vv"], &env)).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", drive.log());
    assert!(
        stdout.contains("Uploading 2 runs to gdrive...\n")
            && stdout.ends_with("✓ Uploaded 2 runs to gdrive successfully!\n"),
        "{stdout}"
    );
    let all = format!("{stdout}{stderr}");
    for run in [&id, &id2] {
        for line in [
            format!("{run}  uploading to Google Drive..."),
            format!("{run}  uploaded ("),
            format!("{run}  remote archive and bucket removed"),
        ] {
            assert!(all.contains(&line), "{line:?} not in:\n{all}");
        }
    }
    let files = drive_json(drive.port, "GET", "/admin/files").await;
    let mut files = files.as_array().unwrap().clone();
    files.sort_by_key(|f| f["name"].as_str().unwrap().to_string());
    assert_eq!(files.len(), 2, "{files:?}");
    // Two runs started in the same second sort by their random suffix: order the files by
    // run (the Drive lists them by name).
    if files[0]["name"] != format!("{id}.tar.gz") {
        files.reverse();
    }
    assert_eq!(files[0]["name"], format!("{id}.tar.gz"));
    assert_eq!(files[1]["name"], format!("{id2}.tar.gz"));
    assert_eq!(files[0]["parents"], json!([FOLDER]));
    let stored = c
        .tmp
        .path()
        .join("gdrive/files")
        .join(format!("{id}.tar.gz"));
    assert_eq!(files[0]["sha256"], sha256_file(&stored));
    assert_eq!(members(&stored), expected_members(&id, &objects));
    let stored2 = c
        .tmp
        .path()
        .join("gdrive/files")
        .join(format!("{id2}.tar.gz"));
    assert_eq!(members(&stored2), expected_members(&id2, &objects2));
    // The archive the run built (its output, recorded in the run) is what the Drive holds.
    let share_id = started_id(&stderr, "upload-to-share-");
    let report = vast::cli::execute::step_output(
        &vast::store::StateDir::new(c.state.clone()),
        &share_id,
        "report",
    )
    .expect("the run's report");
    assert_eq!(report["ok"], 2, "{report}");
    let run = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"] == id.as_str())
        .unwrap();
    assert_eq!(run["archive"]["sha256"], sha256_file(&stored), "{report}");
    assert_eq!(
        run["detail"]["result"]["name"],
        format!("{id}.tar.gz"),
        "{report}"
    );
    assert_eq!(
        run["detail"]["result"]["file_id"], files[0]["id"],
        "{report}"
    );
    let stats = drive_json(drive.port, "GET", "/admin/stats").await;
    assert_eq!(stats["completed"], 2, "{stats}");
    assert_eq!(stats["sessions"], 2, "{stats}");
    assert_eq!(stats["unauthorized"], 0, "{stats}");
    assert!(stats["tokens_issued"].as_u64().unwrap() >= 1, "{stats}");
    for run in [&id, &id2] {
        assert!(!archive_of(&c, run).exists() && !bucket_dir(&c, run).exists());
    }
    assert!(!share_secret_exists(&c).await);

    let issued = drive_json(drive.port, "GET", "/admin/secrets").await;
    let mut secrets: Vec<(&str, String)> = Vec::new();
    for t in issued["tokens"].as_array().unwrap() {
        secrets.push(("an access token", t.as_str().unwrap().to_string()));
    }
    for a in issued["assertions"].as_array().unwrap() {
        // The signature part of the JWT (header and claims are not secret).
        let sig = a.as_str().unwrap().rsplit('.').next().unwrap().to_string();
        secrets.push(("a signed assertion", sig));
    }
    assert!(!secrets.is_empty());
    for l in pem_lines(&private_pem) {
        secrets.push(("the private key", l));
    }
    assert_no_secrets(&c, &share_id, &[&out.stdout, &out.stderr], &secrets).await;
}

/// The example plugin `localdir`: found through VAST_SHARE_PROVIDERS_PATH, then (copied)
/// in `<project>/.vast/share-providers`; its script gets its variable through the Secret and
/// the archive through VAST_ARCHIVE, and its copy is the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localdir_plugin_from_the_search_path_and_the_project() {
    let c = start(SimConfig::default()).await;
    let id = c.finished_run("rke2").await;
    let objects = c.bucket(&id).await;
    let examples = format!("{ROOT}/examples/share-providers");
    let (target_s, target) = pod_target(&c, "target-1");
    let out = output(upload_cmd(
        &c,
        &["--skip-removal", "--keep-archive", "--run-id", &id],
        &[
            ("ROBOVAST_SHARE_TYPE", "localdir"),
            ("VAST_SHARE_PROVIDERS_PATH", examples.as_str()),
            ("LOCALDIR_TARGET", target_s.as_str()),
        ],
    ))
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{id}  uploading to local directory...\n")),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("✓ Uploaded 1 run to localdir successfully!\n"),
        "{stdout}"
    );
    let copy = target.join(format!("{id}.tar.gz"));
    assert_eq!(sha256_file(&copy), sha256_file(&archive_of(&c, &id)));
    assert_eq!(members(&copy), expected_members(&id, &objects));
    assert!(!target.join(format!("{id}.tar.gz.partial")).exists());
    // The script's progress file reached vast's task state.
    let task: Value = serde_json::from_slice(
        &std::fs::read(
            c.pod_data()
                .join(".vast")
                .join(format!("{id}.share-localdir.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let size = std::fs::metadata(&copy).unwrap().len();
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["progress"]["bytes"], size, "{task}");
    assert_eq!(task["progress"]["total"], size, "{task}");

    // The same plugin in the project's own directory (no search path set).
    let plugins = c.project.join(".vast/share-providers");
    super::cluster_support::copy_dir(
        Path::new(&format!("{examples}/localdir")),
        &plugins.join("localdir"),
    );
    let (target2_s, target2) = pod_target(&c, "target-2");
    let out = output(upload_cmd(
        &c,
        &[],
        &[
            ("ROBOVAST_SHARE_TYPE", "localdir"),
            ("LOCALDIR_TARGET", target2_s.as_str()),
        ],
    ))
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{id}  reusing the existing remote archive\n"))
            && stdout.contains(&format!("{id}  remote archive and bucket removed\n")),
        "{stdout}"
    );
    assert_eq!(
        sha256_file(&target2.join(format!("{id}.tar.gz"))),
        sha256_file(&copy)
    );
    assert!(!archive_of(&c, &id).exists() && !bucket_dir(&c, &id).exists());
}

/// Configuration problems are found before any cluster access: the kubeconfig points at
/// nothing, and each case exits 2 with upstream's message. The control case (a complete
/// configuration) then fails on the cluster access, so the kubeconfig really is unusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_configuration_errors_exit_2_before_any_cluster_access() {
    let c = start(SimConfig::default()).await;
    let nowhere = c.tmp.path().join("no-such-kubeconfig");
    let examples = format!("{ROOT}/examples/share-providers");
    let missing_json = c.tmp.path().join("missing/sa.json");
    let missing_json_s = missing_json.display().to_string();
    let run = |env: Vec<(&'static str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut cmd = upload_cmd(&c, &[], &env);
        cmd.env("KUBECONFIG", &nowhere);
        output(cmd)
    };
    let s = String::from;
    type Env = Vec<(&'static str, String)>;
    let cases: Vec<(Env, Vec<String>)> = vec![
        (
            vec![],
            vec![s("Error: ROBOVAST_SHARE_TYPE is not set.\nAdd it to a .env file in your project directory.\nSupported values: gdrive, nextcloud\n")],
        ),
        (
            vec![
                ("ROBOVAST_SHARE_TYPE", s("dropbox")),
                ("VAST_SHARE_PROVIDERS_PATH", examples.clone()),
            ],
            vec![s("Error: Unknown share type 'dropbox'.\nAvailable providers: gdrive, localdir, nextcloud\n")],
        ),
        (
            vec![("ROBOVAST_SHARE_TYPE", s("gdrive"))],
            vec![
                s("Error: Missing environment variable(s) required for share type 'gdrive':\n"),
                s("  ROBOVAST_GDRIVE_SERVICE_ACCOUNT_JSON  — Local path to the Google service account JSON key file\n"),
                s("  ROBOVAST_SHARE_URL  — Google Drive folder URL or bare folder ID (the folder must be in a Shared Drive)\n"),
                s("Set these variables in a .env file in your project directory."),
            ],
        ),
        (
            vec![
                ("ROBOVAST_SHARE_TYPE", s("gdrive")),
                ("ROBOVAST_SHARE_URL", s(FOLDER)),
                ("ROBOVAST_GDRIVE_SERVICE_ACCOUNT_JSON", missing_json_s.clone()),
            ],
            vec![format!("Error: Google Drive service account JSON file not found: {missing_json_s}\n")],
        ),
        (
            vec![
                ("ROBOVAST_SHARE_TYPE", s("localdir")),
                ("VAST_SHARE_PROVIDERS_PATH", examples.clone()),
            ],
            vec![
                s("Error: Missing environment variable(s) required for share type 'localdir':\n"),
                s("  LOCALDIR_TARGET  — Directory in the archiver container to copy the archives into, e.g. /mnt/results\n"),
            ],
        ),
        (
            vec![("ROBOVAST_SHARE_TYPE", s("nextcloud"))],
            vec![s("  ROBOVAST_SHARE_URL  — Nextcloud public share URL, e.g. https://cloud.example.com/s/<token>\n")],
        ),
    ];
    for (env, want) in cases {
        let out = run(env.clone()).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stdout}\n{stderr}");
        for w in want {
            assert!(stderr.contains(&w), "{env:?}: {w:?} not in:\n{stderr}");
        }
        assert!(stdout.is_empty(), "{env:?}: printed {stdout}");
    }

    // The project's .env is read (no variable in the environment)...
    std::fs::write(c.project.join(".env"), "ROBOVAST_SHARE_TYPE=nextcloud\n").unwrap();
    let out = run(vec![]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("required for share type 'nextcloud'"),
        "{}",
        text(&out.stderr)
    );
    // ...and the environment wins over it.
    let out = run(vec![("ROBOVAST_SHARE_TYPE", s("gdrive"))]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("required for share type 'gdrive'"),
        "{}",
        text(&out.stderr)
    );

    // Control: a complete configuration gets to the cluster access, which fails (exit 1).
    let out = run(vec![(
        "ROBOVAST_SHARE_URL",
        s("https://cloud.example.com/s/AbCdEfGh"),
    )])
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Share target (nextcloud): https://cloud.example.com/s/***"),
        "{stdout}"
    );
    assert!(stderr.contains("✗ Error: "), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("AbCdEfGh"));
}

/// A 256 MiB run to the fake Drive in 8 MiB chunks (the fake slowed to 0.25 s per chunk):
/// vast is SIGKILLed at random moments of the upload twice and resumed each time, the upload
/// (detached in the pod) goes on unharmed; then the robovast pod restarts mid-upload, killing
/// the script, and the resumed script continues from its session's offset. The Drive's file
/// is the archive, byte for byte, and holds the random object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdrive_upload_survives_kills_of_vast_and_a_pod_restart() {
    const CHUNK: u64 = 8 * MIB;
    const RATE: u64 = 24 * MIB;
    let c = start(SimConfig::default()).await;
    let id = c.finished_run("rke2").await;

    // 256 MiB + 1 byte of random data into the run's bucket, straight to the pod's S3.
    let blob = c.tmp.path().join("blob.bin");
    let blob_sha = {
        let mut rng = rand::rng();
        let mut f = std::io::BufWriter::new(std::fs::File::create(&blob).unwrap());
        let mut h = Sha256::new();
        let mut buf = vec![0u8; MIB as usize];
        for _ in 0..256 {
            rng.fill_bytes(&mut buf);
            h.update(&buf);
            std::io::Write::write_all(&mut f, &buf).unwrap();
        }
        h.update([7u8]);
        std::io::Write::write_all(&mut f, &[7u8]).unwrap();
        std::io::Write::flush(&mut f).unwrap();
        hex::encode(h.finalize())
    };
    let s3 = c.direct_s3().await;
    let t0 = Instant::now();
    s3.put_object()
        .bucket(&id)
        .key("big/blob.bin")
        .body(
            aws_sdk_s3::primitives::ByteStream::from_path(&blob)
                .await
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    eprintln!(
        "put 256 MiB into the bucket: {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let (drive, sa, private_pem) = fake_drive(&c).await;
    // 24 MiB/s: each 8 MiB chunk is in flight for a third of a second.
    drive_json(drive.port, "POST", &format!("/admin/config?rate={RATE}")).await;
    let api = format!("http://127.0.0.1:{}", drive.port);
    let sa_s = sa.display().to_string();
    let env = [
        ("ROBOVAST_SHARE_TYPE", "gdrive"),
        ("ROBOVAST_SHARE_URL", FOLDER),
        ("ROBOVAST_GDRIVE_SERVICE_ACCOUNT_JSON", sa_s.as_str()),
        ("ROBOVAST_GDRIVE_API_BASE", api.as_str()),
        ("VAST_SHARE_CHUNK_SIZE", "8388608"),
    ];
    let task_state = c
        .pod_data()
        .join(".vast")
        .join(format!("{id}.share-gdrive.json"));
    let task = || -> Value {
        std::fs::read(&task_state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let stats = || drive_json(drive.port, "GET", "/admin/stats");
    let mut outputs: Vec<Vec<u8>> = Vec::new();
    let mut rng = rand::rng();

    // 1. Start the upload; wait for the first uploaded bytes (the archive is built first),
    //    then SIGKILL vast at a random moment.
    let t_start = Instant::now();
    let mut child = Spawned::new(&c, upload_cmd(&c, &["--keep-archive"], &env), "upload");
    let mut archive_secs = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if archive_secs.is_none() && archive_of(&c, &id).is_file() {
            archive_secs = Some(t_start.elapsed().as_secs_f64());
        }
        if stats().await["bytes_received"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(child.running(), "vast ended early: {}", child.output());
        assert!(
            Instant::now() < deadline,
            "no upload began: {}",
            child.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let upload_t0 = Instant::now();
    let archive = archive_of(&c, &id);
    let size = std::fs::metadata(&archive).unwrap().len();
    let chunks = size.div_ceil(CHUNK);
    eprintln!(
        "archive of 256 MiB built in about {:.1} s (until the first byte reached the Drive: {:.1} s); {size} bytes, {chunks} chunks",
        archive_secs.unwrap_or(0.0),
        t_start.elapsed().as_secs_f64()
    );
    let upload_token = |t: &Value| t["token"].as_str().map(String::from);
    let mut kills = 0;
    let mut tokens = Vec::new();
    let mut share_id = None;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(200 + rng.next_u64() % 1000)).await;
        let before = stats().await;
        if before["completed"] != 0 {
            break;
        }
        child.kill();
        kills += 1;
        let out = child.output();
        outputs.push(out.clone().into_bytes());
        let id_now = share_id
            .get_or_insert_with(|| started_id(&out, "upload-to-share-"))
            .clone();
        let t = task();
        assert_eq!(t["state"], "running", "round {round}: {t}");
        tokens.push(upload_token(&t));
        eprintln!(
            "kill {kills}: vast killed at {} of {size} bytes received",
            before["bytes_received"]
        );
        child = Spawned::new(&c, with_env(&c, &["resume", &id_now], &env), "resume");
    }
    let share_id = share_id.expect("vast was killed at least once");

    // 2. The pod restarts mid-upload (its processes die, its data stays).
    let before_restart = stats().await;
    let received_before = before_restart["bytes_received"].as_u64().unwrap();
    let mut restarted_at = None;
    if before_restart["completed"] == 0 && received_before + 4 * CHUNK < size {
        tokio::time::sleep(Duration::from_millis(100 + rng.next_u64() % 500)).await;
        let line = c
            .sim_post("/sim/pods/default/robovast/restart?wipe=false")
            .await;
        assert!(line.contains("200"), "{line}");
        restarted_at = Some(stats().await["bytes_received"].as_u64().unwrap());
    }
    let t_restart = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Until vast ends: when the Drive completes the file.
    let mut completed_after = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.running() {
        let st = stats().await;
        if completed_after.is_none() && st["completed"] == 1 {
            completed_after = Some(upload_t0.elapsed().as_secs_f64());
        }
        assert!(
            Instant::now() < deadline,
            "vast did not finish: {}",
            child.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait(Duration::from_secs(10)).await;
    let code = child.status;
    outputs.push(out.clone().into_bytes());
    assert_eq!(code, Some(0), "the last resume: {out}\n{}", drive.log());
    assert!(
        out.contains("✓ Uploaded 1 run to gdrive successfully!"),
        "{out}"
    );
    // Progress lines of the transfer (not a terminal: a line at every 10 % or 10 s).
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{id}  uploading  "))
                && l.contains("% ")
                && l.contains(" MiB/")),
        "no progress line in: {out}"
    );
    let t = task();
    assert_eq!(t["state"], "succeeded", "{t}");
    if restarted_at.is_some() {
        eprintln!(
            "the upload script was started again {:.1} s after the pod restart",
            t["started_at"].as_f64().unwrap_or(0.0) - t_restart
        );
    }

    // The Drive's file is the archive, byte for byte, and holds the random object.
    let stored = c
        .tmp
        .path()
        .join("gdrive/files")
        .join(format!("{id}.tar.gz"));
    assert_eq!(sha256_file(&stored), sha256_file(&archive));
    let m = members(&stored);
    assert_eq!(m.get(&format!("{id}/big/blob.bin")), Some(&blob_sha));
    let st = stats().await;
    let received = st["bytes_received"].as_u64().unwrap();
    let resent = received.saturating_sub(size);
    let secs = t_start.elapsed().as_secs_f64();
    eprintln!(
        "gdrive: {kills} kill(s) of vast, pod restart at {restarted_at:?} bytes received; {received} bytes received for {size} ({resent} re-sent), {} chunk PUTs, {} sessions; {:.1} MiB/s from the first byte to the completed file (the fake reads at most {} MiB/s), {secs:.1} s from the start",
        st["chunk_puts"],
        st["sessions"],
        size as f64 / MIB as f64 / completed_after.unwrap_or(f64::INFINITY),
        RATE / MIB
    );
    assert_eq!(st["sessions"], 1, "one Drive session throughout: {st}");
    assert_eq!(st["completed"], 1, "{st}");
    // Killed vasts cost nothing: the upload task started before the kills is the one that
    // ran until the restart (same token after each kill).
    assert!(
        tokens.windows(2).all(|w| w[0] == w[1]) && tokens.iter().all(Option::is_some),
        "the upload was restarted by a resume after a kill of vast: {tokens:?}"
    );
    match restarted_at {
        Some(_) => {
            assert_ne!(
                upload_token(&t),
                tokens[0],
                "the upload was started again after the pod restart"
            );
            assert!(
                resent <= CHUNK,
                "re-sent {resent} bytes after the pod restart (more than one chunk)"
            );
            // The restarted script continued its saved session at the confirmed offset.
            let log = std::fs::read_to_string(task_state.with_extension("json.log")).unwrap();
            assert!(log.contains(&format!("{id}  resuming at ")), "{log}");
        }
        None => assert_eq!(resent, 0, "re-sent {resent} bytes without a pod restart"),
    }
    assert!(
        restarted_at.is_some(),
        "the upload ended before the pod restart"
    );
    assert!(
        archive.is_file(),
        "--keep-archive (from the run's parameters)"
    );
    assert!(!bucket_dir(&c, &id).exists());

    let issued = drive_json(drive.port, "GET", "/admin/secrets").await;
    let mut secrets: Vec<(&str, String)> = issued["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ("an access token", t.as_str().unwrap().to_string()))
        .collect();
    for l in pem_lines(&private_pem) {
        secrets.push(("the private key", l));
    }
    let outs: Vec<&[u8]> = outputs.iter().map(Vec::as_slice).collect();
    assert_no_secrets(&c, &share_id, &outs, &secrets).await;
}

/// The binary in the background, output in files.
struct Spawned {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<i32>,
}

impl Spawned {
    fn new(c: &Cluster, mut cmd: Command, tag: &str) -> Spawned {
        let n: u32 = rand::random();
        let out = c.tmp.path().join(format!("{tag}-{n}.out"));
        let err = c.tmp.path().join(format!("{tag}-{n}.err"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        Spawned {
            child: cmd.spawn().expect("spawn vast"),
            out,
            err,
            status: None,
        }
    }

    fn running(&mut self) -> bool {
        match self.child.try_wait().unwrap() {
            Some(s) => {
                self.status = s.code();
                false
            }
            None => true,
        }
    }

    /// SIGKILL (the process has not been reaped, so the pid is still its own).
    fn kill(&mut self) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill");
        self.child.wait().unwrap();
    }

    /// stdout then stderr.
    fn output(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    async fn wait(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while self.running() {
            if Instant::now() >= deadline {
                self.kill();
                panic!("vast did not finish in {limit:?}: {}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.output()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// upload-to-share in-process with the `localdir` plugin: every step run twice, then the run
/// crashed after every journal record and resumed; each time the copy is the bucket's
/// archive, the bucket and the share Secret are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upload_step_is_idempotent_and_survives_a_crash_at_every_record() {
    use vast::engine::{EngineOptions, Outcome, RunId};
    let c = start(SimConfig::default()).await;
    let id = c.finished_run("rke2").await;
    let objects = c.bucket(&id).await;
    let plugin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/share-providers/localdir");
    let provider = vast::share::load_plugin(&plugin).unwrap();
    let (target_s, target) = pod_target(&c, "share-target");
    std::fs::create_dir_all(&target).unwrap();
    let selected = vast::share::Selected {
        pod_env: [("LOCALDIR_TARGET".to_string(), target_s)].into(),
        display_url: None,
        provider: provider.clone(),
    };
    let params = json!({
        "context": null, "namespace": NS,
        "state_dir": c.state.display().to_string(),
        "runs": [{"run": id, "bucket": id}],
        "share_type": "localdir",
        "share_display": provider.display_name(),
        "script": provider.script_key(),
        "plugin_scripts": [[provider.script_key(), provider.script.clone()]],
        "remove_after": "upload",
        "report_from": "remove",
    });
    let resources = || {
        let mut r = c.resources();
        r.insert(vast::ops::share::ShareEnv(selected.clone()));
        r
    };
    let copy = target.join(format!("{id}.tar.gz"));
    let check = |what: String| {
        let c = &c;
        let (copy, id, objects) = (copy.clone(), id.clone(), objects.clone());
        async move {
            assert_eq!(members(&copy), expected_members(&id, &objects), "{what}");
            assert!(c.bucket(&id).await.is_empty(), "{what}: bucket left");
            assert!(!share_secret_exists(c).await, "{what}: Secret left");
        }
    };
    let twice = EngineOptions {
        run_twice: true,
        ..Default::default()
    };
    let (first, o) = c
        .execute_with(
            &RunId::generate("upload-to-share"),
            "upload-to-share",
            &params,
            twice,
            resources(),
        )
        .await;
    assert_eq!(o, Outcome::Succeeded);
    check("run twice".into()).await;
    let dir = vast::store::StateDir::new(c.state.clone());
    let records = dir
        .open_run_for_reading(&first)
        .unwrap()
        .load()
        .unwrap()
        .events;
    assert!(records > 8, "{records}");
    for n in 1..records {
        c.restore_bucket(&id, &objects).await;
        let _ = std::fs::remove_file(&copy);
        let opts = EngineOptions {
            crash_after: Some(n),
            ..Default::default()
        };
        let (run, o) = c
            .execute_with(
                &RunId::generate("upload-to-share"),
                "upload-to-share",
                &params,
                opts,
                resources(),
            )
            .await;
        if o != Outcome::Succeeded {
            assert_eq!(
                c.resume_with(&run, resources()).await,
                Outcome::Succeeded,
                "after record {n}"
            );
        }
        check(format!("crash after record {n}")).await;
    }
}
