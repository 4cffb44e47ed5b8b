//! Server-side printing: `meta.k8s.io/v1` `Table` answers for clients that ask for them
//! (`Accept: application/json;as=Table;...`, as `kubectl get` does), with the columns kubectl
//! shows for the kinds vast uses and Name/Age for the rest; a pod's STATUS as kubectl's
//! printer computes it (`Init:Error`, `Init:0/1`, waiting and terminated reasons).

use serde_json::{json, Value};

use super::resources::ResourceType;

/// Whether the client asked for a Table.
pub fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("as=Table"))
}

/// What each row carries (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Include {
    None,
    #[default]
    Metadata,
    Object,
}

impl Include {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// Age as kubectl prints it (`12s`, `5m`, `3h`, `2d`).
fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn cond(v: &Value, kind: &str) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

/// (column name, priority) per kind; priority 1 columns show with `-o wide`.
fn columns(rt: &ResourceType) -> Vec<(&'static str, u8)> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => vec![
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
        ],
        ("batch", "jobs") => vec![
            ("Name", 0),
            ("Status", 0),
            ("Completions", 0),
            ("Duration", 0),
            ("Age", 0),
        ],
        ("", "nodes") => vec![
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
        ],
        ("", "namespaces") => vec![("Name", 0), ("Status", 0), ("Age", 0)],
        ("", "services") => vec![
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
        ],
        ("", "configmaps") => vec![("Name", 0), ("Data", 0), ("Age", 0)],
        ("", "secrets") => vec![("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)],
        ("", "events") => vec![
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Message", 0),
        ],
        ("kueue.x-k8s.io", "workloads") => vec![
            ("Name", 0),
            ("Queue", 0),
            ("Reserved in", 0),
            ("Admitted", 0),
            ("Finished", 0),
            ("Age", 0),
        ],
        ("kueue.x-k8s.io", "clusterqueues") => vec![
            ("Name", 0),
            ("Stop Policy", 0),
            ("Pending Workloads", 0),
            ("Admitted Workloads", 0),
            ("Age", 0),
        ],
        ("kueue.x-k8s.io", "localqueues") => vec![("Name", 0), ("ClusterQueue", 0), ("Age", 0)],
        _ => vec![("Name", 0), ("Age", 0)],
    }
}

/// READY (ready, total), STATUS and RESTARTS of a pod as kubectl's printer computes them
/// (`printPod` in `pkg/printers/internalversion`): the phase or `status.reason`, then the
/// first init container that has not completed (`Init:Error`, `Init:CrashLoopBackOff`,
/// `Init:0/2`), else the last container's waiting or terminated reason, `Terminating` while
/// deleting.
fn pod_status(o: &Value) -> (usize, usize, String, i64) {
    let list = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let total = list("/spec/containers").len();
    let n_init = list("/spec/initContainers").len();
    let mut reason = match s(o, "/status/reason") {
        "" => match s(o, "/status/phase") {
            "" => "Pending".to_string(),
            p => p.to_string(),
        },
        r => r.to_string(),
    };
    let mut restarts = 0;
    let mut ready = 0;
    let mut initializing = false;
    for (i, c) in list("/status/initContainerStatuses").iter().enumerate() {
        restarts += c["restartCount"].as_i64().unwrap_or(0);
        let term = c.pointer("/state/terminated");
        let code = term.and_then(|t| t["exitCode"].as_i64());
        if code == Some(0) {
            continue;
        }
        if let Some(t) = term {
            reason = match t["reason"].as_str().unwrap_or("") {
                "" => match t["signal"].as_i64().unwrap_or(0) {
                    0 => format!("Init:ExitCode:{}", code.unwrap_or(0)),
                    sig => format!("Init:Signal:{sig}"),
                },
                r => format!("Init:{r}"),
            };
        } else {
            match c.pointer("/state/waiting/reason").and_then(Value::as_str) {
                Some(w) if !w.is_empty() && w != "PodInitializing" => reason = format!("Init:{w}"),
                _ => reason = format!("Init:{i}/{n_init}"),
            }
        }
        initializing = true;
        break;
    }
    let initialized = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Initialized" && c["status"] == "True")
        });
    if !initializing || initialized {
        restarts = 0;
        let mut has_running = false;
        for c in list("/status/containerStatuses").iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            let waiting = c.pointer("/state/waiting/reason").and_then(Value::as_str);
            let term = c.pointer("/state/terminated");
            if let Some(w) = waiting.filter(|w| !w.is_empty()) {
                reason = w.to_string();
            } else if let Some(t) = term {
                reason = match t["reason"].as_str().unwrap_or("") {
                    "" => match t["signal"].as_i64().unwrap_or(0) {
                        0 => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                        sig => format!("Signal:{sig}"),
                    },
                    r => r.to_string(),
                };
            } else if c["ready"] == true && c.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if cond(o, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }
    let phase = s(o, "/status/phase");
    if o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
        && !matches!(phase, "Succeeded" | "Failed")
    {
        reason = "Terminating".to_string();
    }
    (ready, total, reason, restarts)
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = age(o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str));
    let data_len = |ptr: &str| {
        o.pointer(ptr)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => {
            let (ready, total, status, restarts) = pod_status(o);
            let ip = match s(o, "/status/podIP") {
                "" => "<none>",
                ip => ip,
            };
            let node = match s(o, "/spec/nodeName") {
                "" => "<none>",
                n => n,
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts),
                json!(created),
                json!(ip),
                json!(node),
            ]
        }
        ("batch", "jobs") => {
            let status = if cond(o, "Complete") {
                "Complete"
            } else if cond(o, "Failed") {
                "Failed"
            } else if o.pointer("/spec/suspend") == Some(&json!(true)) {
                "Suspended"
            } else {
                "Running"
            };
            let start = o
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let end = o
                .pointer("/status/completionTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .unwrap_or_else(jiff::Timestamp::now);
            let duration = start.map_or(String::new(), |st| {
                let secs = (end.as_second() - st.as_second()).max(0);
                if secs < 120 {
                    format!("{secs}s")
                } else {
                    format!("{}m", secs / 60)
                }
            });
            let completions = format!(
                "{}/{}",
                n(o, "/status/succeeded"),
                o.pointer("/spec/completions")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            );
            vec![
                name,
                json!(status),
                json!(completions),
                json!(duration),
                json!(created),
            ]
        }
        ("", "nodes") => {
            let ready = if cond(o, "Ready") {
                "Ready"
            } else {
                "NotReady"
            };
            vec![
                name,
                json!(ready),
                json!("<none>"),
                json!(created),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
            ]
        }
        ("", "namespaces") => vec![name, json!(s(o, "/status/phase")), json!(created)],
        ("", "services") => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(s(o, "/spec/type")),
                json!(s(o, "/spec/clusterIP")),
                json!("<none>"),
                json!(ports.join(",")),
                json!(created),
            ]
        }
        ("", "configmaps") => vec![
            name,
            json!(data_len("/data") + data_len("/binaryData")),
            json!(created),
        ],
        ("", "secrets") => vec![
            name,
            json!(s(o, "/type")),
            json!(data_len("/data")),
            json!(created),
        ],
        ("", "events") => {
            let last = o
                .pointer("/lastTimestamp")
                .and_then(Value::as_str)
                .or_else(|| {
                    o.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                });
            let object = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            );
            vec![
                json!(age(last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(object),
                json!(s(o, "/message")),
            ]
        }
        ("kueue.x-k8s.io", "workloads") => {
            let yes_no = |b: bool| json!(if b { "True" } else { "" });
            vec![
                name,
                json!(s(o, "/spec/queueName")),
                json!(s(o, "/status/admission/clusterQueue")),
                yes_no(cond(o, "Admitted")),
                yes_no(cond(o, "Finished")),
                json!(created),
            ]
        }
        ("kueue.x-k8s.io", "clusterqueues") => {
            let stop = match s(o, "/spec/stopPolicy") {
                "" => "None",
                p => p,
            };
            vec![
                name,
                json!(stop),
                json!(n(o, "/status/pendingWorkloads")),
                json!(n(o, "/status/admittedWorkloads")),
                json!(created),
            ]
        }
        ("kueue.x-k8s.io", "localqueues") => {
            vec![name, json!(s(o, "/spec/clusterQueue")), json!(created)]
        }
        _ => vec![name, json!(created)],
    }
}

fn row(rt: &ResourceType, o: &Value, include: Include) -> Value {
    let mut r = json!({"cells": cells(rt, o)});
    match include {
        Include::None => {}
        Include::Object => r["object"] = o.clone(),
        Include::Metadata => {
            let mut meta = o.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta});
        }
    }
    r
}

/// A Table of `objects`; `list_meta` becomes its metadata (resourceVersion, continue).
pub fn table<'a>(
    rt: &ResourceType,
    objects: impl IntoIterator<Item = &'a Value>,
    list_meta: Value,
    include: Include,
    with_columns: bool,
) -> Value {
    let defs: Vec<Value> = if with_columns {
        columns(rt)
            .into_iter()
            .map(|(name, priority)| {
                json!({"name": name, "type": if name == "Restarts" { "integer" } else { "string" },
                       "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": priority})
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": objects.into_iter().map(|o| row(rt, o, include)).collect::<Vec<_>>(),
    })
}
