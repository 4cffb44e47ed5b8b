//! The `cleanup` (full teardown, upstream section 7.3, in that order) and `run-cleanup`
//! operations' steps (`workflows/cleanup.yaml`, `workflows/run-cleanup.yaml`).
//!
//! `cleanup.drain` holds the ClusterQueue (`HoldAndDrain`, as upstream, since every run goes)
//! while it removes every run, and restores the policy the queue had before, also when a
//! removal fails; the policy it found is saved in the step's cursor first, so a crash while
//! the queue is held is followed, on resume, by the same step finishing and restoring it.
//! `run-cleanup` never touches the shared queue (see [`super::runs`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::base::{env, kube_err, register_steps};
use crate::cluster::{kueue, objects};
use crate::engine::{Registry, StepContext, StepError};
use crate::manifests::cluster_config::{cluster_config, ARCHIVER_CONFIGMAP, S3_SECRET};
use crate::manifests::kueue::{queue_objects, DEFAULT_QUOTA};

pub fn register(r: &mut Registry) {
    register_steps!(r;
        "cleanup.drain" => drain,
        "cleanup.kueue" => kueue_remove,
        "cleanup.robovast" => robovast_remove,
        "cleanup.forget-setup" => forget_setup,
        "run-cleanup.select" => select,
        "run-cleanup.deactivate" => deactivate,
        "run-cleanup.delete-jobs" => delete_jobs,
        "run-cleanup.delete-workloads" => delete_workloads,
        "run-cleanup.delete-pods" => delete_pods,
    );
}

/// How long `cleanup.drain` may spend removing runs (its step timeout is 5 min).
const REMOVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// The drain step's cursor: the queue is held, and the policy to restore.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    previous: Option<String>,
}

async fn remove_all_runs(cx: &StepContext) -> Result<usize, StepError> {
    let e = env(cx)?;
    let sel = crate::cluster::runs::selector(None);
    let wls = crate::cluster::runs::workloads_of(&e.client, &e.namespace, &sel)
        .await
        .map_err(|err| kube_err("listing the runs' workloads", &err))?;
    let n = crate::cluster::runs::delete_jobs(&e.client, &e.namespace, &sel)
        .await
        .map_err(|err| kube_err("deleting the scenario Jobs", &err))?;
    crate::cluster::runs::delete_workloads(&e.client, &e.namespace, &wls)
        .await
        .map_err(|err| kube_err("deleting the runs' workloads", &err))?;
    crate::cluster::runs::delete_pods(&e.client, &e.namespace, &sel)
        .await
        .map_err(|err| kube_err("deleting the scenario pods", &err))?;
    fail::fail_point!("cleanup.drain.removed", |a| {
        super::base::injected("cleanup.drain.removed", a).map(|_| 0)
    });
    Ok(n)
}

async fn drain(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let held: Option<Held> = cx.cursor()?;
    let previous = match held {
        Some(h) => h.previous,
        None => {
            // `HoldAndDrain` found without our cursor is what an earlier cleanup that could
            // not restore left behind (or upstream's run-cleanup): the queue's own policy is
            // None.
            let p = kueue::stop_policy(&e.client)
                .await
                .map_err(|err| kube_err("reading the ClusterQueue", &err))?
                .filter(|p| p != "HoldAndDrain");
            cx.save_cursor(&Held {
                previous: p.clone(),
            })?;
            p
        }
    };
    kueue::set_stop_policy(&e.client, Some("HoldAndDrain"))
        .await
        .map_err(|err| kube_err("holding the ClusterQueue", &err))?;
    // Bounded well below the step's timeout, so the restore below always gets to run.
    let removed = match tokio::time::timeout(REMOVE_TIMEOUT, remove_all_runs(cx)).await {
        Ok(r) => r,
        Err(_) => Err(StepError::transient(format!(
            "removing the runs took longer than {} s",
            REMOVE_TIMEOUT.as_secs()
        ))),
    };
    // Restore whatever happened. A failed restore is reported first (the cursor still says
    // held, so the next attempt or a resume restores it).
    kueue::set_stop_policy(&e.client, previous.as_deref())
        .await
        .map_err(|err| kube_err("restoring the ClusterQueue's stopPolicy", &err))?;
    let n = removed?;
    Ok(json!({"jobs_deleted": n}))
}

/// Strips the queue objects' finalizers; with our helm release, `helm uninstall`; otherwise
/// deletes the queue objects setup created (Kueue itself was not ours to remove).
async fn kueue_remove(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let objs = queue_objects(&e.namespace, DEFAULT_QUOTA);
    for o in &objs {
        let r = objects::ObjectRef::of(o, &e.namespace)
            .map_err(|err| StepError::permanent(err.to_string()))?;
        if r.kind != "LocalQueue" {
            objects::strip_finalizers(&e.client, &r)
                .await
                .map_err(|err| kube_err(format!("removing the finalizers of {r}"), &err))?;
        }
    }
    if let Some(h) = kueue::helm() {
        let ctx = e.context.as_deref();
        let ours = kueue::helm_release_exists(&h, ctx)
            .await
            .map_err(|err| StepError::transient(err.to_string()))?;
        if ours {
            kueue::helm_uninstall(&h, ctx)
                .await
                .map_err(|err| StepError::transient(format!("Failed to uninstall Kueue: {err}")))?;
            tracing::info!("Kueue uninstalled (helm release 'kueue').");
            return Ok(json!({"kueue": "uninstalled"}));
        }
    }
    // LocalQueue, ClusterQueue, ResourceFlavor (reverse of creation).
    for o in objs.iter().rev() {
        let r = objects::ObjectRef::of(o, &e.namespace)
            .map_err(|err| StepError::permanent(err.to_string()))?;
        objects::delete(&e.client, &r)
            .await
            .map_err(|err| kube_err(format!("deleting {r}"), &err))?;
    }
    Ok(json!({"kueue": "queues deleted"}))
}

/// The cluster config's objects in reverse order (Service, Pod, then StorageClass/PVC), the
/// archiver ConfigMap and the S3 credentials Secret; missing objects are fine.
async fn robovast_remove(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let name: String = cx
        .param("cluster_config")?
        .ok_or_else(|| StepError::permanent("parameter 'cluster_config' is missing"))?;
    let options: BTreeMap<String, String> = cx.param("options")?.unwrap_or_default();
    let cfg = cluster_config(&name).map_err(|err| StepError::permanent(err.to_string()))?;
    let mut objs = cfg
        .render(&options, &e.namespace)
        .map_err(|err| StepError::permanent(err.to_string()))?;
    objs.reverse();
    for (kind, n) in [
        ("ConfigMap", ARCHIVER_CONFIGMAP),
        ("Secret", S3_SECRET),
        ("Secret", crate::pod::SHARE_SECRET),
    ] {
        objs.push(json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": n}}));
    }
    let mut deleted = Vec::new();
    for o in &objs {
        let r = objects::ObjectRef::of(o, &e.namespace)
            .map_err(|err| StepError::permanent(err.to_string()))?;
        if objects::delete(&e.client, &r)
            .await
            .map_err(|err| kube_err(format!("deleting {r}"), &err))?
        {
            deleted.push(r.to_string());
        }
    }
    if cfg.name == "gcp" {
        tracing::warn!("Persistent volumes may need to be deleted manually in GCP console.");
    }
    Ok(json!({"deleted": deleted}))
}

async fn forget_setup(cx: &StepContext) -> Result<Value, StepError> {
    let Some(dir) = cx.param::<String>("project_dir")? else {
        return Ok(json!({"removed": false}));
    };
    let key: Option<String> = cx.param("setup_key")?;
    crate::project::files::remove_setup(std::path::Path::new(&dir), key.as_deref(), true)
        .map_err(|err| StepError::permanent(err.to_string()))?;
    Ok(json!({"removed": true}))
}

fn run_selector(cx: &StepContext) -> Result<String, StepError> {
    let run: Option<String> = cx.param("run_id")?;
    Ok(crate::cluster::runs::selector(run.as_deref()))
}

/// The Workloads of the selected runs' Jobs, captured while the Jobs still exist (the later
/// steps read this list, also after a resume when the Jobs are gone).
async fn select(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let sel = run_selector(cx)?;
    let wls = crate::cluster::runs::workloads_of(&e.client, &e.namespace, &sel)
        .await
        .map_err(|err| kube_err("listing the runs' workloads", &err))?;
    Ok(json!({"workloads": wls}))
}

#[derive(Deserialize)]
struct Selected {
    workloads: Vec<String>,
}

async fn deactivate(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let s: Selected = cx.output("select")?;
    crate::cluster::runs::deactivate(&e.client, &e.namespace, &s.workloads)
        .await
        .map_err(|err| kube_err("deactivating the runs' workloads", &err))?;
    Ok(json!({"deactivated": s.workloads.len()}))
}

async fn delete_jobs(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let n = crate::cluster::runs::delete_jobs(&e.client, &e.namespace, &run_selector(cx)?)
        .await
        .map_err(|err| kube_err("deleting the scenario Jobs", &err))?;
    Ok(json!({"jobs": n}))
}

async fn delete_workloads(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    let s: Selected = cx.output("select")?;
    crate::cluster::runs::delete_workloads(&e.client, &e.namespace, &s.workloads)
        .await
        .map_err(|err| kube_err("deleting the runs' workloads", &err))?;
    Ok(json!({"workloads": s.workloads.len()}))
}

async fn delete_pods(cx: &StepContext) -> Result<Value, StepError> {
    let e = env(cx)?;
    crate::cluster::runs::delete_pods(&e.client, &e.namespace, &run_selector(cx)?)
        .await
        .map_err(|err| kube_err("deleting the scenario pods", &err))?;
    Ok(json!({"pods": "deleted"}))
}
