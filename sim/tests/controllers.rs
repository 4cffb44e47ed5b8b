//! Job, Kueue, scheduler and kubelet behaviour of the sim, observed through kube-rs.

mod kube_support;

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube_support::{eventually, raw, start, start_with, PATIENCE};
use serde_json::{json, Value};
use vast_sim::config::SimConfig;

fn job(
    name: &str,
    annotations: &[(&str, &str)],
    spec_extra: Value,
    queued: bool,
    cpu: &str,
) -> Job {
    let mut labels = BTreeMap::new();
    labels.insert("jobgroup".to_string(), "scenario-runs".to_string());
    if queued {
        labels.insert(
            "kueue.x-k8s.io/queue-name".to_string(),
            "robovast".to_string(),
        );
    }
    let ann: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut spec = json!({
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "robovast", "image": "scenario:latest",
            "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}, "limits": {"cpu": cpu, "memory": "1Gi"}}
        }]}}
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels, "annotations": ann}, "spec": spec}),
    )
    .unwrap()
}

fn kueue_api(
    client: &kube::Client,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// ResourceFlavor, ClusterQueue (cpu quota) and LocalQueue `robovast`, as vast's setup does.
async fn install_queues(client: &kube::Client, cpu_quota: &str) {
    let pp = PatchParams::apply("test").force();
    let rf = kueue_api(client, "ResourceFlavor", "resourceflavors", None);
    rf.patch("default-flavor", &pp, &Patch::Apply(json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "default-flavor"}})))
        .await
        .unwrap();
    let cq = kueue_api(client, "ClusterQueue", "clusterqueues", None);
    cq.patch(
        "robovast-cluster-queue",
        &pp,
        &Patch::Apply(json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "robovast-cluster-queue"},
            "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
                "name": "default-flavor", "resources": [{"name": "cpu", "nominalQuota": cpu_quota}, {"name": "memory", "nominalQuota": "100Gi"}]}]}]}
        })),
    )
    .await
    .unwrap();
    let lq = kueue_api(client, "LocalQueue", "localqueues", Some("default"));
    lq.patch(
        "robovast",
        &pp,
        &Patch::Apply(json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "robovast", "namespace": "default"},
            "spec": {"clusterQueue": "robovast-cluster-queue"}})),
    )
    .await
    .unwrap();
}

/// `await_condition` predicate: the Job has `Failed=True`.
fn job_failed() -> impl kube::runtime::wait::Condition<Job> {
    |j: Option<&Job>| j.is_some_and(|j| has_condition(j, "Failed", None))
}

fn has_condition(j: &Job, kind: &str, reason: Option<&str>) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == kind
                    && c.status == "True"
                    && reason.is_none_or(|r| c.reason.as_deref() == Some(r))
            })
        })
}

#[tokio::test]
async fn job_runs_to_completion_and_await_condition_sees_it() {
    let (_sim, client) = start().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job(
            "done",
            &[("sim.vast.dev/duration-ms", "100")],
            json!({}),
            false,
            "1",
        ),
    )
    .await
    .unwrap();
    let finished = tokio::time::timeout(
        PATIENCE,
        await_condition(jobs.clone(), "done", conditions::is_job_completed()),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert!(has_condition(
        &finished,
        "Complete",
        Some("CompletionsReached")
    ));
    assert!(has_condition(&finished, "SuccessCriteriaMet", None));
    let st = finished.status.unwrap();
    assert_eq!(st.succeeded, Some(1));
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let owned = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=done"))
        .await
        .unwrap();
    assert_eq!(owned.items.len(), 1);
    let pod = &owned.items[0];
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert!(pod.spec.as_ref().unwrap().node_name.is_some());
    let cs = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );
}

#[tokio::test]
async fn kueue_admits_only_what_the_quota_allows() {
    let (_sim, client) = start().await;
    install_queues(&client, "3").await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    for i in 0..7 {
        let created = jobs
            .create(
                &PostParams::default(),
                &job(
                    &format!("q{i}"),
                    &[("sim.vast.dev/duration-ms", "700")],
                    json!({}),
                    true,
                    "1",
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            created.spec.unwrap().suspend,
            Some(true),
            "queued jobs are created suspended"
        );
    }
    let mut max_running = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let list = jobs.list(&ListParams::default()).await.unwrap();
        let running = list
            .items
            .iter()
            .filter(|j| {
                j.spec.as_ref().unwrap().suspend == Some(false)
                    && !has_condition(j, "Complete", None)
            })
            .count();
        assert!(
            running <= 3,
            "{running} jobs admitted at once with a quota of 3 cpu"
        );
        max_running = max_running.max(running);
        if list
            .items
            .iter()
            .all(|j| has_condition(j, "Complete", None))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(max_running, 3, "three jobs ran at the same time");
    let wl = kueue_api(&client, "Workload", "workloads", Some("default"));
    eventually("all 7 workloads Finished", || async {
        let wls = wl
            .list(&ListParams::default().labels("kueue.x-k8s.io/queue-name=robovast"))
            .await
            .unwrap();
        let finished = wls
            .items
            .iter()
            .filter(|w| {
                w.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Finished"))
            })
            .count();
        (wls.items.len() == 7 && finished == 7).then_some(())
    })
    .await;
}

#[tokio::test]
async fn stop_policy_hold_and_drain_evicts_and_none_readmits() {
    let (_sim, client) = start().await;
    install_queues(&client, "2").await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job(
            "long",
            &[("sim.vast.dev/duration-ms", "600000")],
            json!({}),
            true,
            "1",
        ),
    )
    .await
    .unwrap();
    let admitted = |jobs: Api<Job>, want: bool| async move {
        eventually(&format!("job suspended == {}", !want), || {
            let jobs = jobs.clone();
            async move {
                (jobs.get("long").await.unwrap().spec.unwrap().suspend == Some(!want)).then_some(())
            }
        })
        .await
    };
    admitted(jobs.clone(), true).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    eventually("a pod runs", || async {
        pods.list(&ListParams::default().labels("job-name=long"))
            .await
            .unwrap()
            .items
            .iter()
            .any(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Running"))
            .then_some(())
    })
    .await;
    let cq = kueue_api(&client, "ClusterQueue", "clusterqueues", None);
    cq.patch(
        "robovast-cluster-queue",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"stopPolicy": "HoldAndDrain"}})),
    )
    .await
    .unwrap();
    admitted(jobs.clone(), false).await;
    eventually("pods of the drained job deleted", || async {
        pods.list(&ListParams::default().labels("job-name=long"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    cq.patch(
        "robovast-cluster-queue",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"stopPolicy": "None"}})),
    )
    .await
    .unwrap();
    admitted(jobs, true).await;
}

#[tokio::test]
async fn ttl_after_finished_deletes_job_and_pods() {
    let (_sim, client) = start().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job(
            "ttl",
            &[("sim.vast.dev/duration-ms", "50")],
            json!({"ttlSecondsAfterFinished": 1}),
            false,
            "1",
        ),
    )
    .await
    .unwrap();
    eventually("job deleted by TTL", || async {
        jobs.get_opt("ttl").await.unwrap().is_none().then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    eventually("its pods collected", || async {
        pods.list(&ListParams::default().labels("job-name=ttl"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn active_deadline_fails_the_job() {
    let (_sim, client) = start().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job(
            "slow",
            &[("sim.vast.dev/duration-ms", "600000")],
            json!({"activeDeadlineSeconds": 1}),
            false,
            "1",
        ),
    )
    .await
    .unwrap();
    let failed = tokio::time::timeout(PATIENCE, await_condition(jobs, "slow", job_failed()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(has_condition(&failed, "Failed", Some("DeadlineExceeded")));
    let pods: Api<Pod> = Api::default_namespaced(client);
    eventually("active pods deleted", || async {
        pods.list(&ListParams::default().labels("job-name=slow"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn backoff_limit_counts_failed_pods() {
    let (_sim, client) = start().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    // always failing, backoffLimit 2: three pods fail, then the job fails
    let anns = [
        ("sim.vast.dev/duration-ms", "20"),
        ("sim.vast.dev/outcome", "fail"),
    ];
    jobs.create(
        &PostParams::default(),
        &job("bad", &anns, json!({"backoffLimit": 2}), false, "1"),
    )
    .await
    .unwrap();
    let failed = tokio::time::timeout(PATIENCE, await_condition(jobs.clone(), "bad", job_failed()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(has_condition(
        &failed,
        "Failed",
        Some("BackoffLimitExceeded")
    ));
    assert_eq!(failed.status.unwrap().failed, Some(3));
    // the first attempt fails, the retry succeeds
    let anns = [
        ("sim.vast.dev/duration-ms", "20"),
        ("sim.vast.dev/fail-attempts", "1"),
    ];
    jobs.create(
        &PostParams::default(),
        &job("flaky", &anns, json!({"backoffLimit": 1}), false, "1"),
    )
    .await
    .unwrap();
    let done = tokio::time::timeout(
        PATIENCE,
        await_condition(jobs, "flaky", conditions::is_job_completed()),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let st = done.status.unwrap();
    assert_eq!((st.failed, st.succeeded), (Some(1), Some(1)));
}

#[tokio::test]
async fn unschedulable_pod_stays_pending_with_failed_scheduling_event() {
    let config = SimConfig {
        nodes: vast_sim::config::NodesConfig {
            count: 1,
            cpu: "4".into(),
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let (_sim, client) = start_with(config).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "5"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let events: Api<Event> = Api::default_namespaced(client);
    let ev = eventually("FailedScheduling event", || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=huge"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    })
    .await;
    assert!(ev.message.unwrap().contains("Insufficient cpu"));
    let p = pods.get("huge").await.unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert!(p.spec.unwrap().node_name.is_none());
    let sched = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(
        (sched.status.as_str(), sched.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
}

#[tokio::test]
async fn long_running_pod_stays_ready_env_resolution_and_restart() {
    let (_sim, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "robovast", "labels": {"role": "robovast"}},
        "spec": {"containers": [{"name": "minio", "image": "minio/minio", "ports": [{"containerPort": 9000}],
            "env": [{"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}}]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // the secret is missing: the container cannot be configured
    eventually("CreateContainerConfigError", || async {
        let p = pods.get("robovast").await.unwrap();
        let waiting = p
            .status?
            .container_statuses?
            .first()?
            .state
            .clone()?
            .waiting?;
        (waiting.reason.as_deref() == Some("CreateContainerConfigError")).then_some(())
    })
    .await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"user": "minioadmin"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    eventually("pod Running and Ready", || async {
        ready(&pods.get("robovast").await.unwrap()).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let p = pods.get("robovast").await.unwrap();
    assert_eq!(
        p.status.as_ref().unwrap().phase.as_deref(),
        Some("Running"),
        "long-running pods do not end"
    );
    let (code, body) = raw(
        &client,
        "POST",
        "/sim/pods/default/robovast/restart?wipe=false",
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let p = pods.get("robovast").await.unwrap();
    assert_eq!(
        p.status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .restart_count,
        1
    );
    assert!(ready(&p));
    let (code, _) = raw(&client, "POST", "/sim/pods/default/nope/restart", "").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn exec_and_portforward_of_missing_or_pending_pods_are_status_errors() {
    let config = SimConfig {
        nodes: vast_sim::config::NodesConfig {
            count: 1,
            cpu: "1".into(),
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let (_sim, client) = start_with(config).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let err = pods
        .portforward("missing", &[9000])
        .await
        .err()
        .expect("port-forward to a missing pod fails");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pending"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let err = pods
        .exec("pending", ["true"], &Default::default())
        .await
        .err()
        .expect("exec into a pending pod fails");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err:?}"
    );
}

/// The calls of vast's `run-cleanup` (spec §7.2) leave no Job, pod or Workload behind.
#[tokio::test]
async fn run_cleanup_sequence_removes_jobs_pods_and_workloads() {
    use kube::api::{DeleteParams, PropagationPolicy};
    let (_sim, client) = start().await;
    install_queues(&client, "2").await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    for i in 0..3 {
        let mut j = job(
            &format!("c{i}"),
            &[("sim.vast.dev/duration-ms", "600000")],
            json!({}),
            true,
            "1",
        );
        j.metadata
            .labels
            .get_or_insert_default()
            .insert("run-id".into(), "r1".into());
        jobs.create(&PostParams::default(), &j).await.unwrap();
    }
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    eventually("two pods running", || async {
        let running = pods
            .list(&ListParams::default().labels("job-name in (c0,c1,c2)"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == 2).then_some(())
    })
    .await;
    let cq = kueue_api(&client, "ClusterQueue", "clusterqueues", None);
    let stop = |p: &'static str| json!({"spec": {"stopPolicy": p}});
    cq.patch(
        "robovast-cluster-queue",
        &PatchParams::default(),
        &Patch::Merge(stop("HoldAndDrain")),
    )
    .await
    .unwrap();
    let wl = kueue_api(&client, "Workload", "workloads", Some("default"));
    let queued = ListParams::default().labels("kueue.x-k8s.io/queue-name=robovast");
    wl.delete_collection(&DeleteParams::default(), &queued)
        .await
        .unwrap();
    let selector = ListParams::default().labels("jobgroup=scenario-runs,run-id=r1");
    let fg = DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    jobs.delete_collection(&fg, &selector).await.unwrap();
    let bg = DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    pods.delete_collection(&bg, &ListParams::default().labels("job-name in (c0,c1,c2)"))
        .await
        .unwrap();
    cq.patch(
        "robovast-cluster-queue",
        &PatchParams::default(),
        &Patch::Merge(stop("None")),
    )
    .await
    .unwrap();
    eventually("jobs, pods and workloads gone", || async {
        let j = jobs.list(&selector).await.unwrap().items.len();
        let p = pods
            .list(&ListParams::default().labels("job-name in (c0,c1,c2)"))
            .await
            .unwrap()
            .items
            .len();
        let w = wl.list(&queued).await.unwrap().items.len();
        (j + p + w == 0).then_some(())
    })
    .await;
}

/// A running pod deleted from outside counts as failed (the real controller tracks pods with
/// finalizers): with backoffLimit 1 it is replaced, the second loss fails the Job.
#[tokio::test]
async fn deleted_running_pods_count_as_failures() {
    use kube::api::DeleteParams;
    let (_sim, client) = start().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let anns = [("sim.vast.dev/duration-ms", "600000")];
    jobs.create(
        &PostParams::default(),
        &job("lost", &anns, json!({"backoffLimit": 1}), false, "1"),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut deleted = Vec::new();
    for round in 0..2 {
        let victim = eventually("a running pod", || async {
            pods.list(&ListParams::default().labels("job-name=lost"))
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && !deleted.contains(p.metadata.name.as_ref().unwrap())
                })
        })
        .await;
        let name = victim.metadata.name.unwrap();
        pods.delete(&name, &DeleteParams::default()).await.unwrap();
        deleted.push(name);
        if round == 0 {
            let st = eventually("failed counted", || async {
                jobs.get("lost")
                    .await
                    .unwrap()
                    .status
                    .filter(|s| s.failed == Some(1))
            })
            .await;
            assert!(
                !has_condition(&jobs.get("lost").await.unwrap(), "Failed", None),
                "{st:?}"
            );
        }
    }
    let failed = tokio::time::timeout(PATIENCE, await_condition(jobs, "lost", job_failed()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(has_condition(
        &failed,
        "Failed",
        Some("BackoffLimitExceeded")
    ));
    assert_eq!(failed.status.unwrap().failed, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pvcs_lose_their_data() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::DeleteParams;
    let (sim, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let claim_dir = |claim: &str| sim.data_dir().join("pvcs").join("default").join(claim);
    pvcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap(),
    )
    .await
    .unwrap();
    // the PVC of a generic ephemeral volume (as vast's robovast-minio-storage) and a plain one
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "eph"},
        "spec": {"containers": [{"name": "c", "image": "x", "volumeMounts": [
                    {"name": "store", "mountPath": "/store"}, {"name": "data", "mountPath": "/data"}]}],
                 "volumes": [
                    {"name": "store", "ephemeral": {"volumeClaimTemplate": {"spec": {
                        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("pod running with its volume dirs", || {
        let pods = pods.clone();
        let (eph, data) = (claim_dir("eph-store"), claim_dir("data"));
        async move {
            let p = pods.get("eph").await.ok()?;
            (p.status?.phase.as_deref() == Some("Running") && eph.is_dir() && data.is_dir())
                .then_some(())
        }
    })
    .await;
    std::fs::write(claim_dir("eph-store").join("obj"), b"x").unwrap();
    std::fs::write(claim_dir("data").join("obj"), b"y").unwrap();
    pvcs.get("eph-store").await.expect("ephemeral PVC exists");

    pods.delete("eph", &DeleteParams::default()).await.unwrap();
    eventually(
        "the ephemeral PVC and its data are gone with the pod",
        || {
            let pvcs = pvcs.clone();
            let eph = claim_dir("eph-store");
            async move {
                (pvcs.get_opt("eph-store").await.ok()?.is_none() && !eph.exists()).then_some(())
            }
        },
    )
    .await;
    assert!(
        claim_dir("data").join("obj").is_file(),
        "a PVC that still exists keeps its data after its pod is gone"
    );
    pvcs.delete("data", &DeleteParams::default()).await.unwrap();
    eventually("deleting the PVC removes its data", || {
        let data = claim_dir("data");
        async move { (!data.exists()).then_some(()) }
    })
    .await;
}
