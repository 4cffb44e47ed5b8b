//! kube-rs against the sim's API server: typed CRUD with the real error codes, server-side
//! apply, the watcher through a 410, pagination and selectors, the status subresource,
//! finalizers and garbage collection, discovery, and Status errors for unsupported requests.

mod kube_support;

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::watcher;
use kube::Discovery;
use kube_support::{eventually, raw, start, start_with};
use serde_json::json;
use vast_sim::config::SimConfig;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

fn api_code(e: &kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_crud_with_kubernetes_error_codes() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let again = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&again), (409, "AlreadyExists".into()));

    // update with the current rv works, with the old one conflicts
    let mut fresh = cms.get("a").await.unwrap();
    fresh
        .data
        .get_or_insert_default()
        .insert("k".into(), "v2".into());
    let updated = cms
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let stale = cms
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap_err();
    assert_eq!(api_code(&stale), (409, "Conflict".into()));

    let merged = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"step": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged
            .metadata
            .labels
            .unwrap()
            .get("step")
            .map(String::as_str),
        Some("2")
    );
    let jp: json_patch_ops::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "v3"}]))
            .unwrap();
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "v3");

    let list = cms
        .list(&ListParams::default().labels("app=x,step in (2,3)"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list
        .metadata
        .resource_version
        .is_some_and(|rv| !rv.is_empty()));

    // a Success Status, as the generic registry answers for a removed object
    let deleted = cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right());
    assert!(cms.get_opt("a").await.unwrap().is_none());
    let missing = cms.delete("a", &DeleteParams::default()).await.unwrap_err();
    assert_eq!(api_code(&missing), (404, "NotFound".into()));
}

mod json_patch_ops {
    pub use json_patch::Patch;
}

#[tokio::test]
async fn server_side_apply_creates_conflicts_and_forces() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "1", "b": "2"}});
    let created = cms
        .patch("s", &PatchParams::apply("vast"), &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap()["a"], "1");
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("vast"));

    // another manager changing an owned field conflicts, unless forced
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "9"}});
    let err = cms
        .patch("s", &PatchParams::apply("other"), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".into()));
    let forced = cms
        .patch(
            "s",
            &PatchParams::apply("other").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "9");

    // vast stops applying b: it is removed; a now belongs to "other" and stays
    let less = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"c": "3"}});
    let after = cms
        .patch("s", &PatchParams::apply("vast"), &Patch::Apply(&less))
        .await
        .unwrap();
    let data = after.data.unwrap();
    assert_eq!(data.get("a").map(String::as_str), Some("9"));
    assert_eq!(data.get("b"), None);
    assert_eq!(data.get("c").map(String::as_str), Some("3"));
}

#[tokio::test]
async fn watcher_relists_after_410_expired() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("w1", &[]))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut inits = 0;
    let mut seen_w2 = false;
    let mut compacted = false;
    let mut saw_410 = false;
    let deadline = tokio::time::Instant::now() + kube_support::PATIENCE;
    while !(inits >= 2 && seen_w2) {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("watcher events in time")
            .expect("stream open");
        let ev = match ev {
            Ok(ev) => ev,
            // the watcher reports the 410 once, then relists
            Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                saw_410 = true;
                continue;
            }
            Err(e) => panic!("unexpected watcher error {e:?}"),
        };
        match ev {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitDone if !compacted => {
                // the watcher is now watching from the list's rv: expire it
                compacted = true;
                let (code, _) = raw(&client, "POST", "/sim/compact", "").await;
                assert_eq!(code, 200);
                cms.create(&PostParams::default(), &cm("w2", &[]))
                    .await
                    .unwrap();
            }
            watcher::Event::InitApply(o) | watcher::Event::Apply(o)
                if o.metadata.name.as_deref() == Some("w2") =>
            {
                seen_w2 = true;
            }
            _ => {}
        }
    }
    assert!(saw_410, "the watcher saw the 410 Expired");
    assert!(inits >= 2, "the watcher relisted after the 410");
}

#[tokio::test]
async fn raw_watch_from_expired_rv_is_an_error_event_not_http_410() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap();
    raw(&client, "POST", "/sim/compact", "").await;
    let (code, body) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=5",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let ev: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
}

#[tokio::test]
async fn list_pagination_and_selectors() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(
            &PostParams::default(),
            &cm(&format!("p{i}"), &[("tier", tier)]),
        )
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());
    let odd = cms
        .list(&ListParams::default().labels("tier!=even"))
        .await
        .unwrap();
    assert_eq!(odd.items.len(), 3);
    let one = cms
        .list(&ListParams::default().fields("metadata.name=p4"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    let (code, body) = raw(
        &kube_support::client_for(&_sim),
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=tier%20in%201",
        "",
    )
    .await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test]
async fn status_subresource_is_separate() {
    let config = SimConfig {
        controllers: false,
        ..SimConfig::default()
    };
    let (_sim, client) = start_with(config).await;
    let jobs: Api<Job> = Api::default_namespaced(client);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "s"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}},
        "status": {"succeeded": 5},
    }))
    .unwrap();
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(
        created.status.and_then(|s| s.succeeded),
        None,
        "status is dropped on create"
    );
    assert_eq!(
        created.spec.as_ref().unwrap().backoff_limit,
        Some(6),
        "defaults applied"
    );
    let p = jobs
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().active, Some(1));
    let main = jobs
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 7}, "metadata": {"labels": {"l": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.unwrap().active,
        Some(1),
        "the main resource ignores status"
    );
    assert_eq!(main.metadata.labels.unwrap()["l"], "1");
}

#[tokio::test]
async fn finalizers_and_garbage_collection() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    // finalizer: delete only marks
    let mut f = cm("fin", &[]);
    f.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    cms.create(&PostParams::default(), &f).await.unwrap();
    let marked = cms
        .delete("fin", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(cms.get_opt("fin").await.unwrap().is_some());
    cms.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("fin").await.unwrap().is_none());

    // owner references: background, foreground, orphan
    for (policy, dependent_survives) in [
        (PropagationPolicy::Background, false),
        (PropagationPolicy::Foreground, false),
        (PropagationPolicy::Orphan, true),
    ] {
        let owner = cms
            .create(&PostParams::default(), &cm("owner", &[]))
            .await
            .unwrap();
        let mut dep = cm("dep", &[]);
        dep.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().unwrap(),
                block_owner_deletion: Some(true),
                controller: Some(true),
            },
        ]);
        cms.create(&PostParams::default(), &dep).await.unwrap();
        let dp = DeleteParams {
            propagation_policy: Some(policy.clone()),
            ..DeleteParams::default()
        };
        cms.delete("owner", &dp).await.unwrap();
        eventually("owner gone", || async {
            cms.get_opt("owner").await.unwrap().is_none().then_some(())
        })
        .await;
        if dependent_survives {
            let d = cms.get("dep").await.unwrap();
            assert!(
                d.metadata.owner_references.unwrap_or_default().is_empty(),
                "{policy:?}: orphaned"
            );
            cms.delete("dep", &DeleteParams::default()).await.unwrap();
        } else {
            eventually("dependent collected", || async {
                cms.get_opt("dep").await.unwrap().is_none().then_some(())
            })
            .await;
        }
    }
}

#[tokio::test]
async fn namespace_deletion_removes_its_content() {
    let (_sim, client) = start().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let status = nss.get_status("default").await.unwrap().status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Active"));
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    cms.create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap();
    let missing: Api<ConfigMap> = Api::namespaced(client, "nope");
    let err = missing
        .create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 404);
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    eventually("namespace gone", || async {
        nss.get_opt("tmp").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn discovery_lists_builtin_and_kueue_kinds() {
    let (_sim, client) = start().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let discovery = Discovery::new(client).run().await.unwrap();
    let kinds: Vec<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(ar, _)| format!("{}/{}", ar.api_version, ar.kind))
        .collect();
    for want in [
        "v1/Pod",
        "batch/v1/Job",
        "kueue.x-k8s.io/v1beta2/Workload",
        "kueue.x-k8s.io/v1beta2/ClusterQueue",
        "apiextensions.k8s.io/v1/CustomResourceDefinition",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }
}

#[tokio::test]
async fn unsupported_requests_get_status_errors() {
    let (_sim, client) = start().await;
    for (method, path, body, code) in [
        ("GET", "/api/v1/namespaces/default/widgets", "", 404),
        ("GET", "/apis/nothing.example.com/v1/things", "", 404),
        ("POST", "/api/v1/namespaces/default/configmaps/x", "{}", 405),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            r#"{"metadata":{"name":"Bad_Name"}}"#,
            422,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            r#"{"metadata":{}}"#,
            422,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "{not json",
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/x/status",
            "",
            404,
        ),
    ] {
        let (got, text) = raw(&client, method, path, body).await;
        assert_eq!(got, code, "{method} {path}: {text}");
        let status: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status["kind"], "Status", "{method} {path}");
        assert_eq!(status["code"], code);
    }
    // an unsupported patch type
    let req = http::Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/configmaps/x")
        .header("content-type", "text/plain")
        .body(b"x".to_vec())
        .unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
}

#[tokio::test]
async fn crds_created_at_runtime_are_served() {
    let (_sim, client) = start().await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    let crd = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let got = crds.get("widgets.example.com").await.unwrap();
    assert!(got
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True"));
    let (code, body) = raw(&client, "POST", "/apis/example.com/v1/namespaces/default/widgets", r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"size":3}}"#).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = raw(
        &client,
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets/w",
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("\"size\":3"));
}

#[tokio::test]
async fn selector_watch_sees_objects_enter_and_leave() {
    use kube::api::{WatchEvent, WatchParams};
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().labels("app=x"), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("m", &[("app", "y")]))
        .await
        .unwrap();
    for app in ["x", "x2", "z"] {
        let app = if app == "x2" { "x" } else { app };
        let patch =
            json!({"metadata": {"labels": {"app": app, "n": format!("{}", rand_suffix())}}});
        cms.patch("m", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let ev = tokio::time::timeout(kube_support::PATIENCE, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        kinds.push(match ev {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("{e:?}"),
        });
    }
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn expired_continue_token_and_dry_run() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("e{i}"), &[]))
            .await
            .unwrap();
    }
    let page = cms.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page.metadata.continue_.unwrap();
    raw(&client, "POST", "/sim/compact", "").await;
    let err = cms
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (410, "Expired".into()));
    // dry run: validated and answered, not stored
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    cms.create(&pp, &cm("dry", &[])).await.unwrap();
    assert!(cms.get_opt("dry").await.unwrap().is_none());
}

/// Requests outside what the sim serves (unknown subresources, versions and verbs, bad
/// selectors, mismatched kinds, missing namespaces, watches of unknown kinds) are answered
/// promptly with a `Status` of the right code: never a hang, a dropped connection or a panic.
#[tokio::test]
async fn more_unsupported_requests_get_prompt_status_errors() {
    let (_sim, client) = start().await;
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#;
    let (code, text) = raw(&client, "POST", "/api/v1/namespaces/default/configmaps", cm).await;
    assert_eq!(code, 201, "{text}");
    for (method, path, body, want) in [
        ("GET", "/api/v1/namespaces/default/pods/x/proxy", "", 404),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/x/scale",
            "",
            404,
        ),
        ("GET", "/apis/batch/v2/namespaces/default/jobs", "", 404),
        (
            "GET",
            "/apis/kueue.x-k8s.io/v1alpha9/clusterqueues",
            "",
            404,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/widgets?watch=true",
            "",
            404,
        ),
        ("PUT", "/api/v1/namespaces/default/configmaps", cm, 405),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?labelSelector=a%3D%3D%3Db",
            "",
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=a%3D%3D%3Db",
            "",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#,
            400,
        ),
        ("POST", "/api/v1/namespaces/nope/configmaps", cm, 404),
        (
            "PUT",
            "/api/v1/namespaces/default/configmaps/x",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}"#,
            400,
        ),
    ] {
        let (got, text) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            raw(&client, method, path, body),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path} hung"));
        let status: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        assert_eq!(status["kind"], "Status", "{method} {path}: {text}");
        assert_eq!(got, want, "{method} {path}: {text}");
        assert_eq!(status["code"], want, "{method} {path}");
    }
}

#[tokio::test]
async fn watches_get_bookmarks() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = cms
        .create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let lines = |body: &str| -> Vec<serde_json::Value> {
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // streaming list: the initial events end with the `initial-events-end` bookmark
    let (code, body) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let evs = lines(&body);
    assert_eq!(evs[0]["type"], "ADDED", "{body}");
    assert_eq!(evs[1]["type"], "BOOKMARK", "{body}");
    assert_eq!(
        evs[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // a quiet watch with allowWatchBookmarks gets periodic bookmarks carrying the current rv
    let (code, body) = raw(
        &client,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=7"),
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let evs = lines(&body);
    let bm = evs
        .iter()
        .find(|e| e["type"] == "BOOKMARK")
        .unwrap_or_else(|| panic!("no bookmark in {body}"));
    assert_eq!(bm["object"]["metadata"]["resourceVersion"], rv.as_str());
    assert_eq!(bm["object"]["kind"], "ConfigMap");
}
