//! Download benchmark (prints numbers; asserts nothing that can flake): a run's results of
//! SIZE_MIB MiB (one object of incompressible bytes) archived in the simulated robovast pod,
//! then fetched by the real `vast` binary through the port-forward, side by side with a
//! direct S3 GET of the same bytes (no port-forward) into a file with the same SHA-256 work.
//!
//! In one process: an in-process vast-sim, a kubeconfig, a copy of `examples/growth_sim`
//! initialised as a project, `vast execution cluster setup rke2` and two `run --follow -r 1`
//! runs (SIZE_MIB and SMALL_MIB of data), then:
//!
//! 1. the archive build (`download --remote-compress-only`: the pod's archive.py, which
//!    compresses with pigz when it is on PATH, else with python's gzip);
//! 2. the direct baseline: the archive put into a bucket through the pod's direct S3 endpoint
//!    and GET back into a file while hashing, with an fsync every checkpoint like the fetch
//!    (the ratio's baseline) and with one fsync at the end; and vast's own fetch code against
//!    the pod's HTTP server directly (what the port-forward costs);
//! 3. `vast execution cluster download --skip-removal -o <dir>` of each run: peak RSS
//!    (/usr/bin/time), the fetch step's duration from the run's journal (archive size / it =
//!    download MiB/s, ratio to the direct GET), the extract step, the whole command's wall time;
//! 4. a download with the sim dropping every HTTP port-forward stream after DROP_MIB MiB:
//!    bytes the pod's HTTP server sent beyond the archive, per drop (drops counted from
//!    vast's `reconnecting at byte` debug lines), and what vast itself received twice;
//! 5. a download SIGKILLed at KILL_PCT % of the transfer and `vast resume`d: what vast fetches
//!    again (the `.part` size at the kill minus the journaled cursor offset) and the
//!    server-side excess (socket and websocket buffers in flight included).
//!
//! Every measurement starts after a sync(2), so none pays for the writeback of the one before.
//!
//! Run with `cargo bench --bench download` or `scripts/bench-download.sh`. Environment:
//! SIZE_MIB (1024), SMALL_MIB (SIZE_MIB / 4), DROP_MIB (64), KILL_PCT (50), KEEP=1 (keep the
//! work directory and print it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use vast::engine::journal::{EventKind, StepKey};
use vast::results::sha::Sha256State;
use vast::store::StateDir;
use vast_sim::config::SimConfig;
use vast_sim::dataplane::DataPlane;
use vast_sim::server::{Sim, SimHandle};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

const VAST: &str = env!("CARGO_BIN_EXE_vast");
/// GNU time, for the peak RSS of a `vast` process alone.
const TIME: &str = "/usr/bin/time";
const NS: &str = "default";
const MIB: u64 = 1 << 20;
/// Multipart part size of the bench's own uploads.
const PART: u64 = 16 * MIB;
/// Parts in flight at once (so at most this many parts are in memory).
const PARTS_IN_FLIGHT: usize = 3;
/// The bucket (not a run's: its name does not start with `run-`) of the direct baseline.
const BENCH_BUCKET: &str = "vast-bench";
const BENCH_KEY: &str = "bench/archive.tar.gz";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// The bench's world: the sim, the project, its state directory, a direct S3 client.
struct World {
    rt: tokio::runtime::Runtime,
    sim: SimHandle,
    tmp: tempfile::TempDir,
    kubeconfig: PathBuf,
    project: PathBuf,
    state: PathBuf,
    logs: PathBuf,
}

/// One finished `vast` process.
struct Exec {
    code: i32,
    wall: Duration,
    rss_kib: u64,
    cpu_s: f64,
    stdout: String,
    stderr: String,
}

impl Exec {
    fn check(self, what: &str) -> Res<Exec> {
        if self.code == 0 {
            Ok(self)
        } else {
            Err(format!(
                "{what}: exit {}\n{}\n{}",
                self.code, self.stdout, self.stderr
            )
            .into())
        }
    }
}

/// A spawned `vast` process whose output goes to files.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    /// `/usr/bin/time`'s output (`%M %U %S`), when run under it.
    time_out: Option<PathBuf>,
    t0: Instant,
}

impl Running {
    /// Waits with `wait4`. The peak RSS and CPU time are `/usr/bin/time`'s when the child
    /// runs under it; otherwise wait4's, whose peak RSS includes this process's own at the
    /// spawn (Linux keeps the pre-exec high-water mark), so it is an upper bound only.
    fn wait(self) -> Res<Exec> {
        let pid = self.child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = loop {
            // SAFETY: plain syscall on a child of this process with valid out-pointers.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            break r;
        };
        if r != pid {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()).into());
        }
        let wall = self.t0.elapsed();
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let mut rss_kib = ru.ru_maxrss as u64;
        let mut cpu_s = tv(ru.ru_utime) + tv(ru.ru_stime);
        if let Some(t) = &self.time_out {
            // The last line is the format's (a "Command exited with ..." line may precede it).
            let text = std::fs::read_to_string(t).unwrap_or_default();
            let f: Vec<f64> = text
                .lines()
                .last()
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            if let [kib, user, sys] = f[..] {
                rss_kib = kib as u64;
                cpu_s = user + sys;
            }
        }
        Ok(Exec {
            code,
            wall,
            rss_kib,
            cpu_s,
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
        })
        // `self.child` is dropped without a wait: wait4 reaped it.
    }

    fn kill(&self) {
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
    }
}

/// CPU seconds (user + system) this process (the in-process sim) has used so far.
fn self_cpu_s() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn copy_dir(from: &Path, to: &Path) -> Res<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()))?;
        } else {
            std::fs::copy(&p, to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// The id in the `run <id> started (...)` line of a command's stderr.
fn started_id(stderr: &str, prefix: &str) -> Res<String> {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")?
                .split(' ')
                .next()
                .filter(|s| s.starts_with(prefix))
        })
        .map(String::from)
        .ok_or_else(|| format!("no '{prefix}' run started in: {stderr}").into())
}

/// Deterministic incompressible bytes of part `index` (xorshift64, seeded per part).
fn random_part(seed: u64, index: u64, len: usize) -> Vec<u8> {
    let mut x = (seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Multipart upload of `size` bytes whose part `i` (0-based) `part(i, offset, len)` makes;
/// at most [`PARTS_IN_FLIGHT`] parts are in memory.
async fn put_multipart<F>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
    part: F,
) -> Res<()>
where
    F: Fn(u64, u64, usize) -> Res<Vec<u8>>,
{
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?;
    let upload_id = up.upload_id().ok_or("no upload id")?.to_string();
    let n = size.div_ceil(PART).max(1);
    let mut parts: Vec<CompletedPart> = futures::stream::iter(0..n)
        .map(|i| {
            let off = i * PART;
            let len = PART.min(size - off) as usize;
            let body = part(i, off, len);
            let s3 = s3.clone();
            let upload_id = upload_id.clone();
            async move {
                let number = i as i32 + 1;
                let out = s3
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body?))
                    .send()
                    .await?;
                Ok::<_, Error>(
                    CompletedPart::builder()
                        .part_number(number)
                        .e_tag(out.e_tag().unwrap_or_default())
                        .build(),
                )
            }
        })
        .buffer_unordered(PARTS_IN_FLIGHT)
        .try_collect()
        .await?;
    parts.sort_by_key(|p| p.part_number());
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// GETs `bucket/key` through `s3` into `path`, hashing it as the fetch does (1 MiB writes,
/// SHA-256 of each), with an fsync every `sync_every` bytes if given; returns the hex digest.
async fn get_to_file(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    path: &Path,
    sync_every: Option<u64>,
) -> Res<(String, u64)> {
    let resp = s3.get_object().bucket(bucket).key(key).send().await?;
    let mut body = resp.body;
    let mut file = tokio::fs::File::create(path).await?;
    let mut hash = Sha256State::new();
    let mut buf: Vec<u8> = Vec::with_capacity(MIB as usize);
    let mut total = 0u64;
    let mut since_sync = 0u64;
    while let Some(chunk) = body.try_next().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() >= MIB as usize {
            file.write_all(&buf).await?;
            hash.update(&buf);
            total += buf.len() as u64;
            since_sync += buf.len() as u64;
            buf.clear();
            if sync_every.is_some_and(|s| since_sync >= s) {
                file.sync_data().await?;
                since_sync = 0;
            }
        }
    }
    file.write_all(&buf).await?;
    hash.update(&buf);
    total += buf.len() as u64;
    file.sync_data().await?;
    Ok((hash.hex(), total))
}

impl World {
    fn start() -> Res<World> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let tmp = tempfile::Builder::new()
            .prefix("vast-bench-download.")
            .tempdir()?;
        let config = SimConfig {
            data_dir: Some(tmp.path().join("sim-data")),
            ..SimConfig::default()
        };
        let sim = rt.block_on(Sim::start(config))?;
        let kubeconfig = tmp.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)?;
        let project = tmp.path().join("project");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim"),
            &project,
        )?;
        vast::project::files::Project::init(
            &project,
            &project.join("growth_sim.vast"),
            Path::new("results"),
            "INFO",
            true,
        )?;
        let state = project.join(".vast-state");
        let logs = tmp.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        Ok(World {
            rt,
            sim,
            tmp,
            kubeconfig,
            project,
            state,
            logs,
        })
    }

    /// Spawns the real binary in the project directory; `name` names its log files.
    fn spawn(&self, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Res<Running> {
        self.spawn_as(name, args, envs, true)
    }

    /// [`World::spawn`]; `timed`: under `/usr/bin/time` (when it exists) for the peak RSS.
    fn spawn_as(
        &self,
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        timed: bool,
    ) -> Res<Running> {
        let out = self.logs.join(format!("{name}.out"));
        let err = self.logs.join(format!("{name}.err"));
        let time_out =
            (timed && Path::new(TIME).is_file()).then(|| self.logs.join(format!("{name}.time")));
        let mut c = match &time_out {
            Some(t) => {
                let mut c = Command::new(TIME);
                c.arg("-f").arg("%M %U %S").arg("-o").arg(t).arg(VAST);
                c
            }
            None => Command::new(VAST),
        };
        c.args(args)
            .current_dir(&self.project)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("VAST_STATE_DIR")
            .env_remove("FAILPOINTS")
            .env_remove("VAST_LOG")
            .env("VAST_HELM", "/nonexistent/helm")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?);
        for (k, v) in envs {
            c.env(k, v);
        }
        let t0 = Instant::now();
        let child = c.spawn()?;
        Ok(Running {
            child,
            out,
            err,
            time_out,
            t0,
        })
    }

    fn vast(&self, name: &str, args: &[&str]) -> Res<Exec> {
        self.spawn(name, args, &[])?.wait()?.check(name)
    }

    fn kube(&self) -> Res<kube::Client> {
        // The client spawns its buffer worker on the current runtime.
        let _rt = self.rt.enter();
        let mut config = kube::Config::new(self.sim.url().parse()?);
        config.default_namespace = NS.into();
        Ok(kube::Client::try_from(config)?)
    }

    /// An S3 client to the robovast pod's direct endpoint (no port-forward).
    fn s3(&self) -> Res<aws_sdk_s3::Client> {
        let addr = self
            .sim
            .dataplane()
            .endpoint(NS, "robovast", 9000)
            .ok_or("the robovast pod serves no S3 endpoint")?;
        let kube = self.kube()?;
        let creds = self
            .rt
            .block_on(vast::cluster::s3::read_credentials(kube, NS))?;
        Ok(vast::cluster::s3::client(&format!("http://{addr}"), &creds))
    }

    fn archives(&self) -> PathBuf {
        self.sim
            .data_dir()
            .join("pods")
            .join(NS)
            .join("robovast")
            .join("volumes")
            .join("minio-storage")
            .join("archives")
    }

    /// A finished run (`run --follow -r 1`); returns its id.
    fn finished_run(&self, name: &str) -> Res<String> {
        let out = self.vast(
            name,
            &["execution", "cluster", "run", "--follow", "-r", "1"],
        )?;
        started_id(&out.stderr, "run-")
    }

    /// The events of a run's journal (retried while the last writer's lock is released).
    fn events(&self, id: &str) -> Res<Vec<vast::engine::journal::Event>> {
        let dir = StateDir::new(self.state.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match dir.open_run_for_reading(id).and_then(|s| s.events()) {
                Ok(ev) => return Ok(ev),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The journaled offset of run `id`'s fetch cursor (0 without one).
    fn fetch_offset(&self, id: &str) -> Res<u64> {
        let dir = StateDir::new(self.state.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        let state = loop {
            match dir.open_run_for_reading(id).and_then(|s| s.load()) {
                Ok(st) => break st,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let i = state
            .definition
            .steps
            .iter()
            .position(|s| s.name == "fetch")
            .ok_or("no fetch step")?;
        let cursor = state.nodes[i]
            .children
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| c.cursor.clone());
        Ok(cursor
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.pointer("/fetch/offset").and_then(Value::as_u64))
            .unwrap_or(0))
    }
}

/// What the journal says about one map child step (`<step>[0]`) of a download run.
#[derive(Default)]
struct StepTiming {
    /// From its first `Started` to its `Succeeded`.
    secs: f64,
    attempts: u32,
    output: Value,
}

fn step_timing(events: &[vast::engine::journal::Event], step: &str) -> StepTiming {
    let key = StepKey::child(step, 0);
    let mut first = None;
    let mut t = StepTiming::default();
    for e in events {
        match &e.kind {
            EventKind::StepStarted { step, attempt } if *step == key => {
                first.get_or_insert(e.at_ms);
                t.attempts = *attempt;
            }
            EventKind::StepSucceeded { step, output } if *step == key => {
                if let Some(f) = first {
                    t.secs = (e.at_ms - f) as f64 / 1e3;
                }
                t.output = serde_json::from_str(output).unwrap_or(Value::Null);
            }
            _ => {}
        }
    }
    t
}

/// Writes back every dirty page before a measurement, so that one does not pay for the
/// writeback of what the step before it wrote (archives, objects, extracted results).
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// One measured `vast execution cluster download -i <run> --skip-removal -o <out>`.
struct Download {
    exec: Exec,
    id: String,
    fetch: StepTiming,
    extract: StepTiming,
    http_sent: u64,
    sim_cpu_s: f64,
}

fn download(w: &World, name: &str, run: &str, out: &Path, envs: &[(&str, &str)]) -> Res<Download> {
    settle();
    let sent0 = DataPlane::http_bytes_sent();
    let cpu0 = self_cpu_s();
    let out_s = out.display().to_string();
    let args = [
        "execution",
        "cluster",
        "download",
        "-i",
        run,
        "--skip-removal",
        "-o",
        out_s.as_str(),
    ];
    let exec = w.spawn(name, &args, envs)?.wait()?.check(name)?;
    let http_sent = DataPlane::http_bytes_sent() - sent0;
    let sim_cpu_s = self_cpu_s() - cpu0;
    let id = started_id(&exec.stderr, "download-")?;
    let events = w.events(&id)?;
    Ok(Download {
        fetch: step_timing(&events, "fetch"),
        extract: step_timing(&events, "extract"),
        exec,
        id,
        http_sent,
        sim_cpu_s,
    })
}

/// A fetch sink that persists nothing (the direct-HTTP measurement has no journal).
struct NoSink;

impl vast::results::fetch::FetchSink for NoSink {
    fn checkpoint(&self, _: &vast::results::fetch::FetchCursor) {}
    fn progress(&self, _: u64, _: u64) {}
    fn stalled_reconnects(&self) -> u32 {
        5
    }
}

struct Row {
    what: String,
    value: String,
    target: String,
    met: Option<bool>,
}

fn row(what: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        value: value.into(),
        target: String::new(),
        met: None,
    }
}

fn target(what: impl Into<String>, value: impl Into<String>, t: &str, met: bool) -> Row {
    Row {
        what: what.into(),
        value: value.into(),
        target: t.into(),
        met: Some(met),
    }
}

fn main() -> Res<()> {
    let t_bench = Instant::now();
    let size_mib = env_u64("SIZE_MIB").unwrap_or(1024).max(1);
    let small_mib = env_u64("SMALL_MIB").unwrap_or(size_mib / 4).max(1);
    let drop_mib = env_u64("DROP_MIB").unwrap_or(64).max(1);
    let kill_pct = env_u64("KILL_PCT").unwrap_or(50).clamp(1, 99);
    println!(
        "== download bench: {size_mib} MiB run (and a {small_mib} MiB one); {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("   vast: {VAST}");

    let w = World::start()?;
    println!("   work directory: {}", w.tmp.path().display());
    let mut rows: Vec<Row> = Vec::new();

    // ---- 1. setup and two finished runs -------------------------------------------------
    let t = Instant::now();
    w.vast("setup", &["execution", "cluster", "setup", "rke2"])?;
    let big = w.finished_run("run-big")?;
    let small = w.finished_run("run-small")?;
    println!(
        "== setup rke2 and two runs ({big}, {small}) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let bucket_of = |run: &str| vast::manifests::job::label_safe(run);
    let s3 = w.s3()?;

    // ---- 2. the results: one object of incompressible bytes per run; the archives -------
    let mut archive_sizes = Vec::new();
    for (i, (run, mib_n)) in [(&big, size_mib), (&small, small_mib)]
        .into_iter()
        .enumerate()
    {
        let bytes = mib_n * MIB;
        let t = Instant::now();
        w.rt.block_on(put_multipart(
            &s3,
            &bucket_of(run),
            "big/rosbag.db3",
            bytes,
            |idx, _, len| Ok(random_part(7 + i as u64, idx, len)),
        ))?;
        println!(
            "== put {mib_n} MiB into bucket {} (direct S3) in {:.1} s",
            bucket_of(run),
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let out = w.vast(
            &format!("compress-{i}"),
            &[
                "execution",
                "cluster",
                "download",
                "--remote-compress-only",
                "-i",
                run,
            ],
        )?;
        let secs = t.elapsed().as_secs_f64();
        let archive = w.archives().join(format!("{}.tar.gz", bucket_of(run)));
        let size = file_len(&archive);
        if size == 0 {
            return Err(format!("no archive at {}:\n{}", archive.display(), out.stdout).into());
        }
        println!(
            "   archive {} ({:.1} MiB) built in {secs:.1} s: {:.1} MiB/s of input",
            archive.display(),
            mib(size),
            mib_n as f64 / secs
        );
        if i == 0 {
            rows.push(row(
                format!("archive build ({size_mib} MiB, the pod's archiver)"),
                format!("{:.1} MiB/s ({secs:.1} s)", size_mib as f64 / secs),
            ));
            rows.push(row("archive size", format!("{:.1} MiB", mib(size))));
        }
        archive_sizes.push(size);
    }
    let size = archive_sizes[0];
    let archive = w.archives().join(format!("{}.tar.gz", bucket_of(&big)));
    let want_sha = std::fs::read_to_string(format!("{}.sha256", archive.display()))
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from));

    // ---- 3. direct baseline: the archive's bytes through the direct S3 endpoint ---------
    let t = Instant::now();
    w.rt.block_on(async {
        vast::cluster::s3::ensure_bucket(&s3, BENCH_BUCKET).await?;
        let file = std::fs::File::open(&archive)?;
        put_multipart(&s3, BENCH_BUCKET, BENCH_KEY, size, |_, off, len| {
            use std::os::unix::fs::FileExt;
            let mut v = vec![0u8; len];
            file.read_exact_at(&mut v, off)?;
            Ok(v)
        })
        .await
    })?;
    println!(
        "== put the archive as {BENCH_BUCKET}/{BENCH_KEY} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let got = w.tmp.path().join("direct-get.tar.gz");
    let mut direct = Vec::new();
    // First the fetch's own sink work (1 MiB writes, SHA-256, an fsync every checkpoint): the
    // baseline of the ratio. Then with one fsync at the end only, which writes the whole
    // file back at once (slower here: no writeback overlaps the transfer).
    for (label, sync) in [
        (
            "direct S3 GET -> file + SHA-256 + fsync/4 MiB",
            Some(vast::results::fetch::CHECKPOINT),
        ),
        ("  same, one fsync at the end", None),
    ] {
        settle();
        let t = Instant::now();
        let (sha, n) =
            w.rt.block_on(get_to_file(&s3, BENCH_BUCKET, BENCH_KEY, &got, sync))?;
        let secs = t.elapsed().as_secs_f64();
        let verified = match &want_sha {
            Some(want) if *want == sha && n == size => "verified",
            Some(_) => "MISMATCH",
            None => "not verified (no .sha256)",
        };
        println!(
            "== {label}: {:.1} MiB in {secs:.2} s = {:.1} MiB/s ({verified})",
            mib(n),
            mib(n) / secs
        );
        direct.push(mib(n) / secs);
        rows.push(row(
            label,
            format!("{:.1} MiB/s ({secs:.2} s)", mib(n) / secs),
        ));
        let _ = std::fs::remove_file(&got);
    }
    w.rt.block_on(vast::cluster::s3::remove_bucket(&s3, BENCH_BUCKET))?;
    let direct_mibs = direct[0];
    let mut direct_http_mibs = None;

    // The download's own fetch code against the pod's HTTP server directly (no
    // port-forward): what the port-forward costs, apart from S3 vs the file server.
    if let (Some(sha), Some(addr)) = (&want_sha, w.sim.dataplane().endpoint(NS, "robovast", 80)) {
        let part = w.tmp.path().join("direct-http.part");
        settle();
        let t = Instant::now();
        let done = w.rt.block_on(vast::results::fetch::fetch(
            &vast::results::fetch::Tcp(addr),
            &format!("/{}.tar.gz", bucket_of(&big)),
            &part,
            vast::results::fetch::FetchCursor::new(sha, size),
            &NoSink,
            &tokio_util::sync::CancellationToken::new(),
        ))?;
        let secs = t.elapsed().as_secs_f64();
        let mibs = mib(done.offset) / secs;
        direct_http_mibs = Some(mibs);
        println!(
            "== vast's fetch code, direct HTTP to the pod's file server (no port-forward): {:.1} MiB in {secs:.2} s = {mibs:.1} MiB/s",
            mib(done.offset)
        );
        rows.push(row(
            "vast's fetch, direct HTTP (no port-forward)",
            format!("{mibs:.1} MiB/s ({secs:.2} s)"),
        ));
        let _ = std::fs::remove_file(&part);
    }

    // ---- 4. vast download through the port-forward, both sizes --------------------------
    let mut rss = Vec::new();
    for (i, run) in [&big, &small].into_iter().enumerate() {
        let out = w.tmp.path().join(format!("dl-{i}"));
        let d = download(&w, &format!("download-{i}"), run, &out, &[])?;
        let asize = archive_sizes[i];
        let mibs = mib(asize) / d.fetch.secs.max(1e-3);
        println!(
            "== vast download {run} ({}): wall {:.2} s, fetch {:.2} s ({mibs:.1} MiB/s), extract {:.2} s, peak RSS {:.1} MiB, vast CPU {:.2} s, sim CPU {:.2} s, HTTP sent {:.1} MiB",
            d.id,
            d.exec.wall.as_secs_f64(),
            d.fetch.secs,
            d.extract.secs,
            d.exec.rss_kib as f64 / 1024.0,
            d.exec.cpu_s,
            d.sim_cpu_s,
            mib(d.http_sent)
        );
        let rss_mib = d.exec.rss_kib as f64 / 1024.0;
        rss.push(rss_mib);
        let label = if i == 0 { size_mib } else { small_mib };
        if i == 0 {
            rows.push(row(
                format!("vast download: fetch step ({label} MiB run)"),
                format!("{mibs:.1} MiB/s ({:.2} s)", d.fetch.secs),
            ));
            let ratio = mibs / direct_mibs;
            rows.push(target(
                "  ratio download / direct GET",
                format!("{ratio:.2}"),
                ">= 0.8",
                ratio >= 0.8,
            ));
            if let Some(h) = direct_http_mibs {
                rows.push(row(
                    "  ratio download / direct HTTP (port-forward cost)",
                    format!("{:.2}", mibs / h),
                ));
            }
            rows.push(row(
                "  extract step",
                format!(
                    "{:.1} MiB/s of archive ({:.2} s)",
                    mib(asize) / d.extract.secs.max(1e-3),
                    d.extract.secs
                ),
            ));
            rows.push(row(
                "  whole command wall (incl. extraction)",
                format!("{:.2} s", d.exec.wall.as_secs_f64()),
            ));
            rows.push(row(
                "  CPU: vast process / in-process sim",
                format!("{:.2} s / {:.2} s", d.exec.cpu_s, d.sim_cpu_s),
            ));
        }
        rows.push(target(
            format!("  peak RSS of vast download ({label} MiB run)"),
            format!("{rss_mib:.1} MiB"),
            "<= 64 MiB",
            rss_mib <= 64.0,
        ));
        let _ = std::fs::remove_dir_all(&out);
    }
    rows.push(row(
        format!("  peak RSS difference ({size_mib} vs {small_mib} MiB)"),
        format!("{:+.1} MiB", rss[0] - rss[1]),
    ));

    // ---- 5. port-forward streams dropped every DROP_MIB MiB -----------------------------
    let faults =
        json!({"seed": 3, "portforward": {"drop_after_bytes": drop_mib * MIB, "ports": [80]}});
    w.sim.faults().set(serde_json::from_value(faults)?);
    let out = w.tmp.path().join("dl-drops");
    let d = download(
        &w,
        "download-drops",
        &big,
        &out,
        &[(
            "VAST_LOG",
            "warn,vast=info,vast_state=info,vast::results::fetch=debug",
        )],
    )?;
    w.sim.faults().set(Default::default());
    let counted = d
        .exec
        .stderr
        .lines()
        .filter(|l| l.contains("reconnecting at byte"))
        .count() as u64;
    let estimated = size.div_ceil(drop_mib * MIB).saturating_sub(1);
    let drops = if counted > 0 { counted } else { estimated };
    let excess = d.http_sent.saturating_sub(size);
    let client_resent = d
        .fetch
        .output
        .pointer("/detail/resent")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let per_drop = mib(excess) / drops.max(1) as f64;
    println!(
        "== download with a drop every {drop_mib} MiB: {drops} drops ({}; ceil(size/{drop_mib} MiB)-1 = {estimated}), fetch {:.2} s ({:.1} MiB/s), HTTP sent {:.1} MiB for {:.1} MiB, vast received {:.1} MiB twice",
        if counted > 0 { "counted from vast's reconnect lines" } else { "estimated" },
        d.fetch.secs,
        mib(size) / d.fetch.secs.max(1e-3),
        mib(d.http_sent),
        mib(size),
        mib(client_resent)
    );
    rows.push(row(
        format!("drops every {drop_mib} MiB: number of drops"),
        format!(
            "{drops} ({})",
            if counted > 0 { "counted" } else { "estimated" }
        ),
    ));
    rows.push(row(
        "  fetch step with drops",
        format!(
            "{:.1} MiB/s ({:.2} s)",
            mib(size) / d.fetch.secs.max(1e-3),
            d.fetch.secs
        ),
    ));
    rows.push(target(
        "  server-side bytes re-sent per drop",
        format!("{per_drop:.2} MiB"),
        "<= 8 MiB",
        per_drop <= 8.0,
    ));
    rows.push(row(
        "  bytes vast received twice (all drops)",
        format!("{:.2} MiB", mib(client_resent)),
    ));
    let _ = std::fs::remove_dir_all(&out);

    // ---- 6. SIGKILL at KILL_PCT % and `vast resume` --------------------------------------
    let out = w.tmp.path().join("dl-kill");
    let out_s = out.display().to_string();
    let part = out.join(format!("{}.tar.gz.part", bucket_of(&big)));
    settle();
    let sent0 = DataPlane::http_bytes_sent();
    // Not under /usr/bin/time: the SIGKILL goes to vast itself.
    let running = w.spawn_as(
        "download-kill",
        &[
            "execution",
            "cluster",
            "download",
            "-i",
            &big,
            "--skip-removal",
            "-o",
            &out_s,
        ],
        &[],
        false,
    )?;
    let goal = size * kill_pct / 100;
    let deadline = Instant::now() + Duration::from_secs(600);
    while file_len(&part) < goal.max(1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    running.kill();
    let killed = running.wait()?;
    let at_kill = file_len(&part);
    let id = started_id(&killed.stderr, "download-")?;
    let kept = w.fetch_offset(&id)?;
    let refetch = at_kill.saturating_sub(kept);
    let resumed = w.vast("resume-kill", &["resume", &id])?;
    let excess = (DataPlane::http_bytes_sent() - sent0).saturating_sub(size);
    let fetch = step_timing(&w.events(&id)?, "fetch");
    println!(
        "== SIGKILL at {:.1} MiB of {:.1} MiB (cursor at {:.1} MiB), resume in {:.2} s (fetch attempts {}): vast fetches {:.2} MiB again, the server sent {:.2} MiB more than the archive",
        mib(at_kill),
        mib(size),
        mib(kept),
        resumed.wall.as_secs_f64(),
        fetch.attempts,
        mib(refetch),
        mib(excess)
    );
    rows.push(target(
        format!("SIGKILL at {kill_pct} %: bytes vast fetches again"),
        format!("{:.2} MiB", mib(refetch)),
        "<= 8 MiB",
        refetch <= 8 * MIB,
    ));
    rows.push(row(
        "  server-side excess (buffers in flight incl.)",
        format!("{:.2} MiB", mib(excess)),
    ));
    let _ = std::fs::remove_dir_all(&out);

    // ---- the table -----------------------------------------------------------------------
    let wall = t_bench.elapsed().as_secs_f64();
    rows.push(row("whole bench wall time", format!("{wall:.1} s")));
    let w0 = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    println!();
    println!("{:<w0$}  {:<w1$}  target", "metric", "value");
    for r in &rows {
        let verdict = match r.met {
            Some(true) => format!("{}: met", r.target),
            Some(false) => format!("{}: NOT met", r.target),
            None => String::new(),
        };
        println!("{:<w0$}  {:<w1$}  {verdict}", r.what, r.value);
    }

    let World { rt, sim, tmp, .. } = w;
    rt.block_on(sim.shutdown());
    if std::env::var_os("KEEP").is_some() {
        println!("work directory kept: {}", tmp.keep().display());
    }
    Ok(())
}
