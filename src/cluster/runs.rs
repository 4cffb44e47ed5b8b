//! A scenario run's objects on the cluster (shared by `run-cleanup`, `cleanup` and
//! `run --cleanup`): its label selector, the runs present, its Kueue Workloads, and removal.
//!
//! Removal never touches the shared ClusterQueue: the selected Workloads are deactivated
//! (`spec.active: false`, so Kueue admits none of them while the Jobs go), the Jobs are deleted
//! in one delete-collection call (their pods and Workloads follow by garbage collection), then
//! leftover Workloads and pods are deleted and their finalizers stripped. Other runs' Workloads
//! are never evicted.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use crate::cluster::error::is_not_found;
use crate::cluster::kueue::workloads;
use crate::cluster::objects::{delete_named, delete_now, strip_finalizers_named};
use crate::manifests::job::{label_safe, JOBGROUP};

/// Label selector of the scenario Jobs and pods of one run (or of all runs).
pub fn selector(run: Option<&str>) -> String {
    match run {
        Some(r) => format!("jobgroup={JOBGROUP},run-id={}", label_safe(r)),
        None => format!("jobgroup={JOBGROUP}"),
    }
}

/// The pods of Job `job` (label `job-name`), oldest first.
pub async fn job_pods(
    client: &Client,
    namespace: &str,
    job: &str,
) -> Result<Vec<Pod>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut items = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?
        .items;
    items.sort_by_key(|p| {
        p.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
    });
    Ok(items)
}

/// The last `lines` lines of container `container`'s log in pod `pod`.
pub async fn log_tail(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    lines: i64,
) -> Result<String, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.logs(
        pod,
        &kube::api::LogParams {
            container: Some(container.to_string()),
            tail_lines: Some(lines),
            ..Default::default()
        },
    )
    .await
}

/// The `run-id` labels of the scenario Jobs in `namespace`.
pub async fn run_ids(client: &Client, namespace: &str) -> Result<BTreeSet<String>, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let list = jobs
        .list(&ListParams::default().labels(&selector(None)))
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|j| j.metadata.labels.as_ref()?.get("run-id").cloned())
        .collect())
}

/// Names of the Workloads owned by the selected Jobs (by owner UID, not by a label).
pub async fn workloads_of(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<String>, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let uids: BTreeSet<String> = jobs
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter_map(|j| j.metadata.uid)
        .collect();
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let wls = match workloads(client, Some(namespace))
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        // No Kueue: no Workloads.
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(wls
        .into_iter()
        .filter(|w| {
            w.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| uids.contains(&o.uid))
        })
        .filter_map(|w| w.metadata.name)
        .collect())
}

/// `spec.active: false` on each Workload (missing ones are fine).
pub async fn deactivate(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<(), kube::Error> {
    let api = workloads(client, Some(namespace));
    let patch = json!({"spec": {"active": false}});
    for n in names {
        match api
            .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the objects `lp` selects in one delete-collection call, then strips the finalizers
/// of any still there (terminating). Returns how many were selected.
async fn delete_selected<K>(api: &Api<K>, lp: &ListParams) -> Result<usize, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    // Names only: a run's Jobs as full objects are megabytes per thousand.
    let n = api.list_metadata(lp).await?.items.len();
    if n > 0 {
        delete_collection_unread(api, lp).await?;
    }
    for o in api.list_metadata(lp).await?.items {
        if let Some(name) = o.metadata.name.as_deref() {
            strip_finalizers_named(api, name).await?;
        }
    }
    Ok(n)
}

/// One delete-collection call whose answer is drained, never parsed: an API server answers
/// with every deleted object (10,000 Jobs are ~100 MB of JSON, several times that as parsed
/// values), and only the status matters. Error answers become `kube::Error::Api` as usual.
async fn delete_collection_unread<K>(api: &Api<K>, lp: &ListParams) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    use http_body_util::BodyExt;
    let req = kube::core::Request::new(api.resource_url())
        .delete_collection(&delete_now(), lp)
        .map_err(kube::Error::BuildRequest)?;
    let res = api
        .clone()
        .into_client()
        .send(req.map(kube::client::Body::from))
        .await?;
    let status = res.status();
    let mut body = res.into_body();
    if status.is_client_error() || status.is_server_error() {
        let bytes = body.collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let st = serde_json::from_str::<kube::core::Status>(&text).unwrap_or_else(|_| {
            kube::core::Status::failure(text.trim(), "Failed to parse error data")
                .with_code(status.as_u16())
        });
        return Err(kube::Error::Api(st.boxed()));
    }
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}

/// Deletes the selected Jobs in one call, then strips the finalizers of any still terminating.
/// Returns how many Jobs were there.
pub async fn delete_jobs(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<usize, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    delete_selected(&jobs, &ListParams::default().labels(selector)).await
}

/// Deletes the named Workloads and strips their finalizers (missing ones are fine).
pub async fn delete_workloads(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<(), kube::Error> {
    let api = workloads(client, Some(namespace));
    for n in names {
        if delete_named(&api, n).await? {
            strip_finalizers_named(&api, n).await?;
        }
    }
    Ok(())
}

/// Deletes the selected pods and strips the finalizers of any still there.
pub async fn delete_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    delete_selected(&pods, &ListParams::default().labels(selector)).await?;
    Ok(())
}
