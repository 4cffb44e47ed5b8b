//! Exec sessions: one host process per session. Over a websocket stdin is channel 0, stdout 1,
//! stderr 2 and the exit status a `metav1.Status` on channel 3 (v5 adds the close signal on
//! 255); over SPDY each of them is a stream the client opens (`streamtype` header).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::spdy::{Session, Stream};
use super::ws::Ws;

/// A resolved exec request.
#[derive(Clone)]
pub(crate) struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The pod's filesystem view (a mount namespace), if the machine allows one.
    pub isolation: Option<super::isolate::Isolation>,
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// How long output may stay silent after the main process exited before the session ends
/// anyway (a detached child that kept the pipes open must not hold the exec forever).
const DRAIN_IDLE: Duration = Duration::from_millis(1500);

fn frame(ch: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(ch);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// The exit status as the `metav1.Status` the error channel carries.
fn status_json(exit: &Result<i32, String>) -> String {
    let body = match exit {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => serde_json::json!({
            "metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500,
        }),
    };
    body.to_string()
}

/// What the process writes.
enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    wrap: fn(Bytes) -> Output,
    tx: mpsc::Sender<Output>,
    progress: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                progress.fetch_add(n as u64, Ordering::Relaxed);
                if tx
                    .send(wrap(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Runs `spec`'s process to its end, whatever the transport: stdin from `stdin` (its end is
/// EOF), stdout and stderr into `out` until the pipes close, or stay silent for [`DRAIN_IDLE`]
/// after the process exited. Returns the exit code, or why the process could not run.
async fn execute(
    spec: &ExecSpec,
    stdin: Option<mpsc::Receiver<Bytes>>,
    out: mpsc::Sender<Output>,
) -> Result<i32, String> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err("no command given".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .process_group(0)
        .stdin(pipe(spec.stdin && stdin.is_some()))
        .stdout(pipe(spec.stdout))
        .stderr(pipe(spec.stderr));
    if let Some(iso) = &spec.isolation {
        super::isolate::apply(&mut cmd, iso).map_err(|e| format!("isolating the exec: {e}"))?;
    }
    let mut child = cmd.spawn().map_err(|e| {
        format!("failed to exec in container: starting container process caused: exec: {program:?}: {e}")
    })?;

    // Client -> process; the end of `stdin` closes the process's stdin.
    let feeder = match (child.stdin.take(), stdin) {
        (Some(mut w), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if w.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        })),
        _ => None,
    };

    let progress = Arc::new(AtomicU64::new(0));
    let mut pumps = Vec::new();
    if let Some(o) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(
            o,
            Output::Stdout,
            out.clone(),
            progress.clone(),
        )));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(
            e,
            Output::Stderr,
            out.clone(),
            progress.clone(),
        )));
    }
    drop(out);

    let exit = match child.wait().await {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
        }
        Err(e) => Err(format!("waiting for the command failed: {e}")),
    };

    // Drain what the process wrote; stop when the pipes close or stay silent too long.
    let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
    let mut all = std::pin::pin!(futures::future::join_all(pumps));
    let mut last = progress.load(Ordering::Relaxed);
    let mut idle = Duration::ZERO;
    let tick = Duration::from_millis(250);
    loop {
        if tokio::time::timeout(tick, all.as_mut()).await.is_ok() {
            break;
        }
        let now = progress.load(Ordering::Relaxed);
        if now == last {
            idle += tick;
            if idle >= DRAIN_IDLE {
                aborts.iter().for_each(|a| a.abort());
                break;
            }
        } else {
            idle = Duration::ZERO;
            last = now;
        }
    }
    if let Some(f) = feeder {
        f.abort();
    }
    exit
}

/// Run one websocket exec session to its end.
pub(crate) async fn run(ws: Ws, spec: ExecSpec) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.send(super::ws::normal_close()).await;
    });

    // Client -> process: stdin frames, stdin close (v5), websocket close (v4's EOF).
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(32);
    let reader = tokio::spawn(async move {
        let mut stdin = Some(stdin_tx);
        while let Some(msg) = stream.next().await {
            let data = match msg {
                Ok(Message::Binary(d)) => d,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match data.first() {
                Some(&STDIN) if data.len() > 1 => {
                    if let Some(w) = stdin.as_ref() {
                        if w.send(data.slice(1..)).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(&CLOSE) if data.get(1) == Some(&STDIN) => stdin = None,
                _ => {}
            }
        }
    });

    // Process -> client: stdout on 1, stderr on 2.
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(64);
    let forward = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(o) = out_rx.recv().await {
                let m = match o {
                    Output::Stdout(b) => frame(STDOUT, &b),
                    Output::Stderr(b) => frame(STDERR, &b),
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        })
    };
    let exit = execute(&spec, Some(stdin_rx), out_tx).await;
    let _ = forward.await;
    let _ = tx.send(frame(ERROR, status_json(&exit).as_bytes())).await;
    drop(tx);
    let _ = writer.await;
    reader.abort();
}

/// How long the kubelet waits for a client to open the streams an exec needs.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Run one SPDY exec session (`v4.channel.k8s.io` and older): the client opens an `error`
/// stream, then `stdin`, `stdout`, `stderr` as requested (and `resize` with a tty); the exit
/// status goes on the error stream as a `metav1.Status` (v4) and every stream is closed.
pub(crate) async fn run_spdy(mut session: Session, spec: ExecSpec, tty: bool) {
    let expected = 1
        + usize::from(spec.stdin)
        + usize::from(spec.stdout)
        + usize::from(spec.stderr && !tty)
        + usize::from(tty);
    let mut streams: Vec<Stream> = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while streams.len() < expected {
        match tokio::time::timeout_at(deadline, session.streams.recv()).await {
            Ok(Some(s)) => streams.push(s),
            Ok(None) | Err(_) => {
                tracing::warn!(
                    got = streams.len(),
                    expected,
                    "spdy exec: the client did not open its streams"
                );
                session.finish().await;
                return;
            }
        }
    }
    let mut take = |kind: &str| {
        streams
            .iter()
            .position(|s| s.header("streamtype") == Some(kind))
            .map(|i| streams.swap_remove(i))
    };
    let error = take("error");
    let stdin = take("stdin");
    let stdout = take("stdout");
    let stderr = take("stderr");
    let sender = session.sender.clone();

    let (out_tx, mut out_rx) = mpsc::channel::<Output>(64);
    let (out_id, err_id) = (stdout.as_ref().map(|s| s.id), stderr.as_ref().map(|s| s.id));
    let forward = {
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Some(o) = out_rx.recv().await {
                let (id, b) = match o {
                    Output::Stdout(b) => (out_id, b),
                    Output::Stderr(b) => (err_id.or(out_id), b),
                };
                if let Some(id) = id {
                    if !sender.data(id, b).await {
                        return;
                    }
                }
            }
        })
    };
    let exit = execute(&spec, stdin.map(|s| s.data), out_tx).await;
    let _ = forward.await;
    for id in [out_id, err_id].into_iter().flatten() {
        sender.fin(id).await;
    }
    if let Some(e) = error {
        // v4 reports success too; older protocols only failures (as text).
        sender.data(e.id, Bytes::from(status_json(&exit))).await;
        sender.fin(e.id).await;
    }
    drop(sender);
    session.finish().await;
}
