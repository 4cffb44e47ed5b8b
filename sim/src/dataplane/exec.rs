//! Exec sessions: one host process per websocket, stdin on channel 0, stdout on 1, stderr on 2,
//! the exit status as a `metav1.Status` on channel 3 (v5 adds the close signal on 255).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

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

fn status_frame(exit: Result<i32, String>) -> Message {
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
    frame(ERROR, body.to_string().as_bytes())
}

async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    ch: u8,
    tx: mpsc::Sender<Message>,
    progress: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                progress.fetch_add(n as u64, Ordering::Relaxed);
                if tx.send(frame(ch, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Run one exec session to its end.
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

    let Some((program, args)) = spec.argv.split_first() else {
        let _ = tx.send(status_frame(Err("no command given".into()))).await;
        drop(tx);
        let _ = writer.await;
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .process_group(0)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if spec.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if spec.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "failed to exec in container: starting container process caused: exec: {program:?}: {e}"
            );
            let _ = tx.send(status_frame(Err(msg))).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };

    // Client -> process: stdin frames, stdin close (v5), websocket close.
    let mut stdin = child.stdin.take();
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let data = match msg {
                Ok(Message::Binary(d)) => d,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match data.first() {
                Some(&STDIN) if data.len() > 1 => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&data[1..]).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(&CLOSE) if data.get(1) == Some(&STDIN) => stdin = None,
                _ => {}
            }
        }
        // v4 clients signal stdin EOF by closing the websocket.
        drop(stdin);
    });

    let progress = Arc::new(AtomicU64::new(0));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(
            out,
            STDOUT,
            tx.clone(),
            progress.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(
            err,
            STDERR,
            tx.clone(),
            progress.clone(),
        )));
    }

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
    let _ = tx.send(status_frame(exit)).await;
    drop(tx);
    let _ = writer.await;
    reader.abort();
}
