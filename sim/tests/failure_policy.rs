//! `podFailurePolicy` and `backoffLimit` of the job controller, the preemption and scenario
//! outcome faults, `GET /sim/stats`, and pod logs of Job pods, observed through kube-rs.

mod kube_support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube_support::{raw, start_with, PATIENCE};
use serde_json::{json, Value};
use vast_sim::config::SimConfig;
use vast_sim::faults::FaultConfig;

/// The policy vast renders: preempted pods are retried, exit code 3 fails the Job.
fn policy() -> Value {
    json!({"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "robovast", "operator": "In", "values": [3]}},
    ]})
}

fn job(name: &str, test_id: &str, annotations: Value, spec_extra: Value) -> Job {
    let mut spec = json!({
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never",
            "initContainers": [{"name": "s3-init", "image": "busybox"}],
            "containers": [{
                "name": "robovast", "image": "scenario:latest",
                "env": [{"name": "TEST_ID", "value": test_id}, {"name": "CONFIG", "value": "cfg"},
                        {"name": "S3_SECRET_KEY", "value": "hidden"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
            }]}}
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "annotations": annotations}, "spec": spec}),
    )
    .unwrap()
}

fn config(faults: Value) -> SimConfig {
    let mut c = SimConfig::default();
    c.pods.job_duration_ms = 100;
    c.faults = serde_json::from_value::<FaultConfig>(faults).expect("fault config");
    c
}

fn condition<'a>(j: &'a Job, kind: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

fn failed() -> impl kube::runtime::wait::Condition<Job> {
    |j: Option<&Job>| j.is_some_and(|j| condition(j, "Failed").is_some())
}

async fn wait_for(
    jobs: &Api<Job>,
    name: &str,
    cond: impl kube::runtime::wait::Condition<Job>,
) -> Job {
    tokio::time::timeout(PATIENCE, await_condition(jobs.clone(), name, cond))
        .await
        .expect("in time")
        .expect("watch")
        .expect("job exists")
}

async fn pods_of(client: &kube::Client, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap()
        .items
}

fn main_state(p: &Pod) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    p.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .expect("terminated")
}

async fn stats(client: &kube::Client) -> Value {
    let (code, body) = raw(client, "GET", "/sim/stats", "").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn preempted_pod_is_ignored_replaced_and_counted() {
    let (_sim, client) = start_with(config(json!({"seed": 3, "preempt": {"fraction": 1.0}}))).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job(
            "spot",
            "cfg-0",
            json!({}),
            json!({"podFailurePolicy": policy()}),
        ),
    )
    .await
    .unwrap();
    let done = wait_for(&jobs, "spot", conditions::is_job_completed()).await;
    let st = done.status.unwrap();
    assert_eq!(
        (st.succeeded, st.failed),
        (Some(1), None),
        "the preempted pod is not counted"
    );
    let pods = pods_of(&client, "spot").await;
    assert_eq!(pods.len(), 2, "one preempted pod and its replacement");
    let preempted: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Failed"))
        .collect();
    assert_eq!(preempted.len(), 1);
    let ps = preempted[0].status.as_ref().unwrap();
    assert_eq!(ps.reason.as_deref(), Some("Terminated"));
    let dt = ps
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("DisruptionTarget");
    assert_eq!(
        (
            dt.status.as_str(),
            dt.reason.as_deref(),
            dt.message.as_deref()
        ),
        (
            "True",
            Some("TerminationByKubelet"),
            Some("Pod was terminated in response to imminent node shutdown.")
        )
    );
    let t = main_state(preempted[0]);
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("Error")));
    let s = stats(&client).await;
    assert_eq!(s["preempted"], 1, "{s}");
    assert_eq!(s["preempted_jobs"], json!(["spot"]));
    assert_eq!(s["pods_created_by_jobs"], 2);
    assert_eq!(s["pod_failures_ignored"], 1);
    // the log of the preempted pod says so
    let api: Api<Pod> = Api::default_namespaced(client.clone());
    let log = api
        .logs(
            preempted[0].metadata.name.as_ref().unwrap(),
            &LogParams::default(),
        )
        .await
        .unwrap();
    assert!(
        log.ends_with("vast-sim: scenario finished: preempted\n"),
        "{log}"
    );
}

#[tokio::test]
async fn fail_job_rule_on_exit_code_fails_at_once_and_logs() {
    let faults = json!({"pods": [{"match": "exit3", "outcome": "fail", "exit_code": 3}]});
    let (_sim, client) = start_with(config(faults)).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job(
            "exit3",
            "cfg-1",
            json!({}),
            json!({"backoffLimit": 6, "podFailurePolicy": policy()}),
        ),
    )
    .await
    .unwrap();
    let j = wait_for(&jobs, "exit3", failed()).await;
    let pods = pods_of(&client, "exit3").await;
    assert_eq!(pods.len(), 1, "no replacement");
    let pod = pods[0].metadata.name.clone().unwrap();
    let expected = format!(
        "Container robovast for pod default/{pod} failed with exit code 3 matching FailJob rule at index 1"
    );
    for kind in ["FailureTarget", "Failed"] {
        let c = condition(&j, kind).expect(kind);
        assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"));
        assert_eq!(c.message.as_deref(), Some(expected.as_str()));
    }
    assert_eq!(j.status.as_ref().unwrap().failed, Some(1));
    let t = main_state(&pods[0]);
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        pods_of(&client, "exit3").await.len(),
        1,
        "still no replacement"
    );

    // logs: whole, tailLines, init container, unknown container
    let api: Api<Pod> = Api::default_namespaced(client.clone());
    let log = api
        .logs(
            &pod,
            &LogParams {
                container: Some("robovast".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "vast-sim: starting scenario cfg-1");
    assert_eq!(
        lines[1], "vast-sim: parameters: TEST_ID=cfg-1 CONFIG=cfg",
        "credentials are left out"
    );
    assert_eq!(
        *lines.last().unwrap(),
        "vast-sim: scenario finished: failed with exit code 3"
    );
    let tail = api
        .logs(
            &pod,
            &LogParams {
                container: Some("robovast".into()),
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        tail,
        "vast-sim: scenario finished: failed with exit code 3\n"
    );
    let init = api
        .logs(
            &pod,
            &LogParams {
                container: Some("s3-init".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        init.ends_with("vast-sim: init container s3-init completed\n"),
        "{init}"
    );
    match api
        .logs(
            &pod,
            &LogParams {
                container: Some("nope".into()),
                ..Default::default()
            },
        )
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 400);
            assert_eq!(
                e.message,
                format!("container nope is not valid for pod {pod}")
            );
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[tokio::test]
async fn oomkilled_pods_count_until_the_backoff_limit() {
    // matched by TEST_ID (vast's "<config>-<run>"), not by the Job name
    let faults = json!({"pods": [{"match": "memhog-", "outcome": "oomkilled"}]});
    let (_sim, client) = start_with(config(faults)).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job(
            "run-7",
            "memhog-7",
            json!({}),
            json!({"backoffLimit": 2, "podFailurePolicy": policy()}),
        ),
    )
    .await
    .unwrap();
    let j = wait_for(&jobs, "run-7", failed()).await;
    let c = condition(&j, "Failed").unwrap();
    assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        c.message.as_deref(),
        Some("Job has reached the specified backoff limit")
    );
    assert_eq!(j.status.as_ref().unwrap().failed, Some(3));
    let pods = pods_of(&client, "run-7").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let t = main_state(p);
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    }
    let api: Api<Pod> = Api::default_namespaced(client.clone());
    let log = api
        .logs(
            pods[0].metadata.name.as_ref().unwrap(),
            &LogParams::default(),
        )
        .await;
    // the only container is the default (init containers do not count)
    let log = log.unwrap();
    assert!(
        log.ends_with("vast-sim: scenario finished: OOMKilled\n"),
        "{log}"
    );
}

#[tokio::test]
async fn hang_runs_until_the_active_deadline_and_attempts_limit_a_rule() {
    let faults =
        json!({"pods": [{"match": "flaky", "outcome": "fail", "exit_code": 2, "attempts": 1}]});
    let (_sim, client) = start_with(config(faults)).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job(
            "stuck",
            "stuck-0",
            json!({"sim.vast.dev/outcome": "hang"}),
            json!({"activeDeadlineSeconds": 1}),
        ),
    )
    .await
    .unwrap();
    jobs.create(
        &PostParams::default(),
        &job("flaky", "f-0", json!({}), json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    let j = wait_for(&jobs, "stuck", failed()).await;
    assert_eq!(
        condition(&j, "Failed").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    let f = wait_for(&jobs, "flaky", conditions::is_job_completed()).await;
    let st = f.status.unwrap();
    assert_eq!((st.failed, st.succeeded), (Some(1), Some(1)));
    // an annotated exit code
    jobs.create(
        &PostParams::default(),
        &job(
            "coded",
            "c-0",
            json!({"sim.vast.dev/outcome": "fail", "sim.vast.dev/exit-code": "5"}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    wait_for(&jobs, "coded", failed()).await;
    let pods = pods_of(&client, "coded").await;
    assert_eq!(main_state(&pods[0]).exit_code, 5);
}

/// Runs `n` Jobs with a preemption fraction under `seed`; returns the stats at the end.
async fn preempt_campaign(seed: u64, n: usize) -> Value {
    let faults = json!({"seed": seed, "preempt": {"fraction": 0.5}});
    let (_sim, client) = start_with(config(faults)).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    for i in 0..n {
        jobs.create(
            &PostParams::default(),
            &job(
                &format!("run-{i}"),
                &format!("cfg-{i}"),
                json!({}),
                json!({"podFailurePolicy": policy()}),
            ),
        )
        .await
        .unwrap();
    }
    for i in 0..n {
        let j = wait_for(&jobs, &format!("run-{i}"), conditions::is_job_completed()).await;
        assert_eq!(j.status.unwrap().failed, None);
    }
    let s = stats(&client).await;
    assert_eq!(
        s["pods_created_by_jobs"].as_u64().unwrap(),
        n as u64 + s["preempted"].as_u64().unwrap(),
        "re-created pods = preempted pods: {s}"
    );
    assert_eq!(s["preempted"], s["pod_failures_ignored"]);
    s
}

#[tokio::test]
async fn preemption_fraction_is_deterministic_for_a_seed() {
    let a = preempt_campaign(11, 8).await;
    let b = preempt_campaign(11, 8).await;
    assert_eq!(a["preempted"], b["preempted"], "{a} vs {b}");
    let p = a["preempted"].as_u64().unwrap();
    assert!(p > 0 && p < 8, "fraction 0.5 of 8 gave {p}");
    assert_eq!(a["preempted_jobs"].as_array().unwrap().len() as u64, p);
}

#[tokio::test]
async fn invalid_pod_failure_policies_are_rejected() {
    let (_sim, client) = start_with(config(json!({}))).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let mut j = job(
        "onfailure",
        "x",
        json!({}),
        json!({"podFailurePolicy": policy()}),
    );
    j.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("OnFailure".into());
    match jobs.create(&PostParams::default(), &j).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
            assert!(
                e.message
                    .contains("only \"Never\" is supported when podFailurePolicy is specified"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
    let fail_index = json!({"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [1]}}]});
    match jobs
        .create(
            &PostParams::default(),
            &job(
                "failindex",
                "x",
                json!({}),
                json!({"podFailurePolicy": fail_index}),
            ),
        )
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422);
            assert!(e.message.contains("spec.podFailurePolicy.rules[0].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set"), "{}", e.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    // other invalid rules, as raw bodies
    for (rule, why) in [
        (
            json!({"action": "Count", "onExitCodes": {"operator": "In", "values": [0, 1]}}),
            "must not be 0 for the In operator",
        ),
        (
            json!({"action": "Count"}),
            "specifying one of OnExitCodes and OnPodConditions is required",
        ),
        (
            json!({"action": "Retry", "onExitCodes": {"operator": "In", "values": [1]}}),
            "Unsupported value: \"Retry\"",
        ),
        (
            json!({"action": "Count", "onExitCodes": {"operator": "Is", "values": [1]}}),
            "Unsupported value: \"Is\"",
        ),
        (
            json!({"action": "Count", "onExitCodes": {"operator": "NotIn", "values": []}}),
            "values: Required value",
        ),
    ] {
        let body = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"}, "spec": {
            "podFailurePolicy": {"rules": [rule]},
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
        let (code, text) = raw(
            &client,
            "POST",
            "/apis/batch/v1/namespaces/default/jobs",
            &body.to_string(),
        )
        .await;
        assert_eq!(code, 422, "{text}");
        let status: Value = serde_json::from_str(&text).unwrap();
        let message = status["message"].as_str().unwrap_or("");
        assert!(message.contains(why), "{why}: {message}");
    }
    // onPodConditions status defaults to True
    let body = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok"}, "spec": {
        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
    let (code, created) = raw(
        &client,
        "POST",
        "/apis/batch/v1/namespaces/default/jobs",
        &body.to_string(),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(
        created.pointer("/spec/podFailurePolicy/rules/0/onPodConditions/0/status"),
        Some(&json!("True"))
    );
}
