//! What turns a run into an unattended campaign, besides `run.follow`'s re-submission of lost
//! runs: the end-of-campaign notification (`campaign.notify`, `workflows/campaign*.yaml`) and
//! the `rerun` operation (`workflows/rerun.yaml`: `rerun.select`, `rerun.create-job`), which
//! re-submits a run's lost (or failed) scenario runs into the same run.
//!
//! Parameters of `rerun`: the target run's own parameters (`vast_file`, `vast_sha256`,
//! `config`, `runs`, `log_tree`, `context`, `namespace`, `state_dir`), plus `target` (its
//! run id), `lost`, `failed`.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::base::{env, kube_err, register_steps};
use super::run::{bucket, job_index, project, resubmit, state_dir, Notifier};
use super::runs::{JobOutcome, JobRecord, RunRecord};
use crate::engine::{Registry, StepContext, StepError};
use crate::notify::{Event, EventKind};

pub fn register(r: &mut Registry) {
    register_steps!(r;
        "campaign.notify" => notify,
        "rerun.select" => select,
        "rerun.create-job" => create_job,
    );
}

/// Sends the campaign's `ended` event (when a webhook is configured), once: a delivered event
/// is noted in the step's cursor, and a succeeded step is never repeated by a resume (only a
/// crash between the POST and that note repeats it, with the same event `id`).
async fn notify(cx: &StepContext) -> Result<Value, StepError> {
    let url = cx.resource::<Notifier>().ok().and_then(|n| n.0.clone());
    let run_id = cx.run_id().as_str().to_string();
    let record = RunRecord::load(&state_dir(cx)?, &run_id)
        .map_err(StepError::permanent)?
        .unwrap_or_default();
    let counts = record.notify_counts(0);
    let report: Value = cx.output("report").unwrap_or_default();
    let not_taken = report.get("failed").and_then(Value::as_u64).unwrap_or(0);
    let outcome = if counts.failed + counts.lost == 0 && not_taken == 0 {
        "succeeded"
    } else {
        "succeeded_with_failures"
    };
    let mut message = format!(
        "{}: {} succeeded, {} failed, {} lost",
        crate::console::plural(counts.total as u64, "run"),
        counts.succeeded,
        counts.failed,
        counts.lost
    );
    if not_taken > 0 {
        message.push_str(&format!(
            "; results of {} not collected",
            crate::console::plural(not_taken, "run")
        ));
    }
    let Some(url) = url else {
        return Ok(json!({"sent": false, "outcome": outcome, "message": message}));
    };
    // Sent once: the cursor says so after the POST, so a re-run of this step (another attempt
    // after a later failure, a resume after a crash past this point) does not send it again.
    if cx.cursor::<bool>()?.unwrap_or(false) {
        return Ok(json!({"sent": true, "outcome": outcome, "message": message}));
    }
    let ev = Event::new(EventKind::Ended, &run_id, outcome, counts, message.clone());
    let sent = crate::notify::send(&url, &ev).await;
    if sent {
        cx.save_cursor(&true)?;
    }
    Ok(json!({"sent": sent, "outcome": outcome, "message": message}))
}

/// Sends the `failed` event of a campaign that stopped with an error (the CLI calls it when
/// a run with a webhook ends failed or paused); best effort like every notification.
pub async fn notify_stopped(url: &str, state_dir: &std::path::Path, run_id: &str, message: &str) {
    let record = RunRecord::load(state_dir, run_id)
        .ok()
        .flatten()
        .unwrap_or_default();
    let ev = Event::new(
        EventKind::Failed,
        run_id,
        "failed",
        record.notify_counts(0),
        format!("{message} (resumable: vast resume {run_id})"),
    );
    crate::notify::send(url, &ev).await;
}

/// One run to re-submit: its first Job and the attempt to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rerun {
    pub b: String,
    pub k: u32,
}

fn target(cx: &StepContext) -> Result<String, StepError> {
    cx.param::<String>("target")?
        .ok_or_else(|| StepError::permanent("parameter 'target' is missing"))
}

/// Observes the target run's Jobs once (outcomes recorded, evidence stored, Jobs vanished
/// unobserved recorded lost) and selects the runs whose latest attempt is lost (and failed,
/// with `failed`). Runs without an outcome yet are never selected.
async fn select(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let sd = state_dir(cx)?;
    let run = target(cx)?;
    let mut record = RunRecord::load(&sd, &run)
        .map_err(StepError::permanent)?
        .ok_or_else(|| {
            StepError::permanent(format!("run '{run}' has no record in {}", sd.display()))
        })?;
    let p = project(cx).await?;
    if record.jobs.is_empty() {
        record.jobs = job_index(&run, &p).keys().cloned().collect();
    }
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), &e.namespace);
    // A page at a time (constant memory at any size).
    let mut s3c: super::evidence::LazyS3 = None;
    let run_bucket = bucket(&run);
    let mut present = std::collections::BTreeSet::new();
    let mut lp = ListParams::default()
        .labels(&crate::cluster::runs::selector(Some(&run)))
        .limit(250);
    loop {
        let page = jobs
            .list(&lp)
            .await
            .map_err(|err| kube_err("listing the run's Jobs", &err))?;
        for j in &page.items {
            if let Some(name) = &j.metadata.name {
                present.insert(name.clone());
            }
            super::evidence::observe(
                &e.client,
                &e.namespace,
                &run_bucket,
                j,
                &mut record,
                &mut s3c,
            )
            .await;
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    if record.submitted {
        let gone: Vec<String> = record
            .latest_outcomes()
            .filter(|(_, n, r)| r.is_none() && !present.contains(n))
            .map(|(_, n, _)| n)
            .collect();
        for n in gone {
            let mut r = JobRecord::new(JobOutcome::Lost);
            r.reason = Some("vanished before its outcome was observed".into());
            record.record(&n, r);
        }
    }
    record.save(&sd)?;
    let lost = cx.param::<bool>("lost")?.unwrap_or(true);
    let failed = cx.param::<bool>("failed")?.unwrap_or(false);
    let picked: Vec<Rerun> = record
        .latest_outcomes()
        .filter_map(|(b, _, r)| {
            let o = r?.outcome;
            ((lost && o == JobOutcome::Lost) || (failed && o == JobOutcome::Failed)).then(|| {
                Rerun {
                    b: b.to_string(),
                    k: record.attempt_of(b) + 1,
                }
            })
        })
        .collect();
    tracing::info!(
        "Re-submitting {} of {run}.",
        crate::console::plural(picked.len() as u64, "run")
    );
    serde_json::to_value(picked).map_err(|err| StepError::permanent(err.to_string()))
}

/// Creates the next attempt of one selected run.
async fn create_job(cx: &StepContext) -> Result<Value, StepError> {
    let item: Rerun = cx.item()?;
    let e = env(cx)?;
    let sd = state_dir(cx)?;
    let run = target(cx)?;
    let p = project(cx).await?;
    let index = job_index(&run, &p);
    let mut record = RunRecord::load(&sd, &run)
        .map_err(StepError::permanent)?
        .unwrap_or_default();
    let name = resubmit(cx, &run, &e, &p, &index, &mut record, &sd, &item.b, item.k).await?;
    Ok(json!({"n": name}))
}
