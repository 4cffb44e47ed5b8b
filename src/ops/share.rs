//! The steps of `upload-to-share` that are its own (archive, removal and report are shared
//! with download in `results.rs`):
//!
//! - `share.secret`: the provider's variables as the Secret `vast-share` (mounted into the
//!   archiver container), waited for until the pod sees this version of it. The values come
//!   from the `.env` files / environment of the process (a resource, never a run parameter).
//! - `share.upload`: the provider's script started detached in the pod per run, its progress
//!   polled and shown; the script resumes by itself after a pod restart (gdrive: persisted
//!   session URI and offset query; nextcloud ≥ 32: chunks already on the server are skipped).
//!   A killed vast leaves the upload running in the pod; the resume re-attaches to it.
//! - `share.forget`: deletes the Secret once every upload ended.
//!
//! Polling the upload in the pod is bounded like the archiver's (`results::TaskWatch`): no
//! change of its state or progress for 30 min, or three starts that never showed up, end the
//! attempt.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::base::{env, kube_err, register_steps, sleep};
use super::results::{display, pod_err, previous, scripts, PlanItem, RunResult, TaskWatch};
use crate::cluster::objects;
use crate::console;
use crate::engine::{Registry, StepContext, StepError};
use crate::pod;
use crate::progress::{self, Progress};
use crate::share::Selected;

pub fn register(r: &mut Registry) {
    register_steps!(r;
        "share.secret" => secret,
        "share.upload" => upload,
        "share.forget" => forget,
    );
}

/// The provider chosen for this process (rebuilt from `.env` on resume).
#[derive(Clone, Debug)]
pub struct ShareEnv(pub Selected);

const VERSION_KEY: &str = "VAST_SHARE_VERSION";

async fn secret(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let share = cx.resource::<ShareEnv>().map_err(|_| {
        StepError::permanent(
            "the share provider's variables are not available (set ROBOVAST_SHARE_TYPE and its variables in .env)",
        )
    })?;
    let sel = &share.0;
    // A resume reads `.env` again: it must still name the run's provider, or the pod would
    // get one provider's variables for another's script.
    let want: String = cx.param("share_type")?.unwrap_or_default();
    if !want.is_empty() && sel.provider.manifest.share_type != want {
        return Err(StepError::permanent(format!(
            "this run uploads to '{want}', but ROBOVAST_SHARE_TYPE is now '{}'; set it back to '{want}' to resume",
            sel.provider.manifest.share_type
        )));
    }
    let version = sel.version();
    let mut data: serde_json::Map<String, Value> = sel
        .pod_env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    data.insert(VERSION_KEY.into(), Value::String(version.clone()));
    let obj = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": pod::SHARE_SECRET,
            "labels": {"app.kubernetes.io/managed-by": "vast"},
        },
        "type": "Opaque",
        "stringData": data,
    });
    objects::apply(&e.client, &obj, &e.namespace)
        .await
        .map_err(|err| super::base::apply_err(&err))?;
    let scripts = scripts(cx)?;
    let limit = Duration::from_secs(cx.param::<u64>("scripts_timeout_s")?.unwrap_or(180));
    let started = std::time::Instant::now();
    loop {
        let out = scripts
            .run(&[
                "cat".to_string(),
                format!("{}/{VERSION_KEY}", pod::SHARE_ENV_DIR),
            ])
            .await
            .map_err(pod_err)?;
        if out.code == 0 && out.stdout_text().trim() == version {
            return Ok(json!({"version": version}));
        }
        if started.elapsed() >= limit {
            return Err(StepError::permanent(format!(
                "the robovast pod does not mount the Secret '{}' at {} after {} s; re-create the pod with `vast execution cluster setup --force`",
                pod::SHARE_SECRET,
                pod::SHARE_ENV_DIR,
                limit.as_secs()
            )));
        }
        sleep(cx, Duration::from_secs(2)).await?;
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UploadCursor {
    token: Option<String>,
    starts: u32,
}

async fn upload(cx: &StepContext) -> Result<Value, StepError> {
    let prev = previous(cx, "archive")?;
    let Some(info) = prev.archive.clone() else {
        return Err(StepError::permanent(format!(
            "no archive of run {} to upload",
            prev.run
        )));
    };
    let item: PlanItem = cx.item()?;
    let mode = display(cx);
    let script: String = cx
        .param("script")?
        .ok_or_else(|| StepError::permanent("the run has no upload script"))?;
    let share_type: String = cx.param("share_type")?.unwrap_or_default();
    let display_name: String = cx
        .param("share_display")?
        .unwrap_or_else(|| share_type.clone());
    let scripts = scripts(cx)?;
    let state = pod::state_path(&format!("{}.share-{share_type}", item.run));
    let mut cursor: UploadCursor = cx.cursor()?.unwrap_or_default();
    let max_starts = super::base::budget(cx, "starts", 3);
    let mut bar: Option<Progress> = None;
    let mut announced = false;
    let mut watch = TaskWatch::new("the upload");
    loop {
        let st = scripts.status(&state).await.map_err(pod_err)?;
        let ours = cursor.token.is_some() && st.token == cursor.token;
        watch.observe(&st, ours && st.state != "absent")?;
        if ours && st.state == "succeeded" {
            if let Some(b) = bar.as_mut() {
                b.finish_at(info.size);
            }
            progress::status(
                mode,
                &item.run,
                &format!("uploaded ({})  ✓", progress::size(info.size)),
            );
            return Ok(json!(RunResult {
                detail: Some(
                    json!({"share": share_type, "progress": st.progress, "result": st.result})
                ),
                ..prev
            }));
        }
        if st.is_running() {
            if !announced {
                progress::status(mode, &item.run, &format!("uploading to {display_name}..."));
                announced = true;
            }
            if let (Some(done), Some(total)) = (st.progress_u64("bytes"), st.progress_u64("total"))
            {
                // The rate counts what this process saw move (a resumed vast attaches to an
                // upload that may be far along).
                let b = bar.get_or_insert_with(|| {
                    Progress::bytes(
                        &format!("{}  uploading", item.run),
                        total,
                        done.max(st.progress_u64("resumed_from").unwrap_or(0)),
                        mode,
                    )
                });
                b.update(done);
            }
            sleep(cx, Duration::from_millis(500)).await?;
            continue;
        }
        if ours && st.state == "failed" && cursor.starts >= max_starts {
            let why = st
                .error
                .as_deref()
                .and_then(|e| e.lines().rev().find(|l| l.contains("ERROR")).map(str::trim))
                .unwrap_or("")
                .to_string();
            return Err(StepError::permanent(format!(
                "upload FAILED (exit code {}){}",
                st.exit_code.unwrap_or(-1),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            )));
        }
        if ours && st.state == "failed" {
            tracing::warn!(
                "{}: upload attempt {} failed (exit code {}); starting it again",
                item.run,
                cursor.starts,
                st.exit_code.unwrap_or(-1)
            );
            sleep(cx, Duration::from_secs(u64::from(cursor.starts) * 2)).await?;
        }
        // Not started, died with the pod, failed, or someone else's: start ours. The token is
        // saved first, so a crash right after the start re-attaches instead of starting twice.
        watch.starting()?;
        let token = format!("{}-{}", cx.run_id().as_str(), cursor.starts + 1);
        cursor.token = Some(token.clone());
        cursor.starts += 1;
        cx.save_cursor(&cursor)?;
        let command = vec![
            "env".to_string(),
            format!("VAST_ARCHIVE={}", info.path),
            format!(
                "VAST_STATE_FILE={}/{}.share-{share_type}.resume.json",
                pod::STATE_DIR,
                item.run
            ),
            format!("VAST_RUN_ID={}", item.run),
            "python".to_string(),
            format!("{}/{script}", pod::SCRIPTS_DIR),
            item.run.clone(),
        ];
        scripts
            .start(&state, &token, Some(pod::SHARE_ENV_DIR), &command)
            .await
            .map_err(pod_err)?;
        // Said at the start too: a small archive may be uploaded before the first poll.
        if !announced {
            progress::status(mode, &item.run, &format!("uploading to {display_name}..."));
            announced = true;
        }
    }
}

/// Deletes the share Secret (the pod keeps nothing of the provider's credentials), then
/// prints the summary of the report (here, so `vast resume` prints it too).
async fn forget(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let api: Api<Secret> = Api::namespaced(e.client.clone(), &e.namespace);
    let removed = objects::delete_named(&api, pod::SHARE_SECRET)
        .await
        .map_err(|err| kube_err("deleting Secret 'vast-share'", &err))?;
    let report: Value = cx.output("report")?;
    let share_type: String = cx.param("share_type")?.unwrap_or_default();
    let count = |k: &str| report.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (ok, failed) = (count("ok"), count("failed"));
    console::status("");
    if failed == 0 {
        console::result(format!(
            "✓ Uploaded {} to {share_type} successfully!",
            console::plural(ok, "run")
        ));
    } else {
        console::result(format!(
            "✗ Upload of {failed} of {} to {share_type} failed",
            console::plural(ok + failed, "run")
        ));
    }
    Ok(json!({"removed": removed}))
}
