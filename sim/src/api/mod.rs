//! The Kubernetes REST API: routing of `/api`, `/apis`, discovery and OpenAPI, the verbs on
//! stored objects (get, list, create, update, patch, delete, deletecollection, watch, the
//! `status` subresource), protobuf creates ([`protobuf`]), pod logs ([`logs`]),
//! `SelfSubjectAccessReview`s (always allowed), the pod `exec`/`portforward` upgrades handed to
//! the data plane, fault injection per request, and `Status` errors ([`ApiError`]).
//!
//! The sim's own control endpoints (`/sim/...`) are not here but in [`crate::control`], which
//! uses this module's [`App`], [`ApiError`] and response helpers; the server sends each
//! request to one or the other. This module builds on the store, [`crate::admission`],
//! [`crate::selector`] and the data plane, and calls into the controllers only to resolve a
//! pod for `exec`/`portforward` ([`crate::controllers::resolve::resolve_pod`]).

pub mod logs;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod table;
pub mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::admission;
use crate::dataplane::DataPlane;
use crate::faults::{ApiFault, Faults};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{self, keys, Store};
use resources::{Registry, ResourceType};

/// Response body: a whole JSON document or a stream (watch).
pub type Body = BoxBody<Bytes, Infallible>;

/// Returned to hyper to drop the connection without an answer (fault `Reset`).
#[derive(Debug, thiserror::Error)]
#[error("connection reset by fault injection")]
pub struct Reset;

/// Shared state of the API server (and of the control endpoints in [`crate::control`]).
pub struct App {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub faults: Arc<Faults>,
    pub dataplane: Arc<DataPlane>,
    pub addr: SocketAddr,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// An API error rendered as a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(rt)),
        );
        e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        e
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }
    fn from_store(rt: &ResourceType, e: store::Error) -> Self {
        let q = qualified(rt);
        let details =
            |name: &str| Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        match e {
            store::Error::NotFound { name, .. } => Self::not_found(rt, &name),
            store::Error::AlreadyExists { name, .. } => ApiError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{q} \"{name}\" already exists"),
                details: details(&name),
                retry_after: None,
            },
            store::Error::Conflict { name, reason, .. } => ApiError {
                code: 409,
                reason: "Conflict",
                message: format!("Operation cannot be fulfilled on {q} \"{name}\": {reason}"),
                details: details(&name),
                retry_after: None,
            },
            store::Error::Invalid(m) => Self::invalid(m),
            store::Error::Expired { .. } => Self::new(410, "Expired", e.to_string()),
        }
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    pub fn response(&self) -> Response<Body> {
        let mut resp = json_response(self.code, &self.to_status());
        if let Some(secs) = self.retry_after {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// `jobs.batch`, `pods`: how Kubernetes names a resource in messages.
fn qualified(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response<T: Serialize + ?Sized>(code: u16, body: &T) -> Response<Body> {
    let bytes =
        serde_json::to_vec(body).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The query parameters the sim understands (others are ignored).
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub watch: bool,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub send_initial_events: bool,
    pub field_manager: Option<String>,
    pub force: bool,
    pub dry_run: bool,
    pub propagation_policy: Option<String>,
    /// `includeObject` for Tables.
    pub include_object: table::Include,
    /// The client asked for a `Table` (Accept header).
    pub table: bool,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let mut out = Query::default();
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            let t = crate::selector::parse_bool(&v).unwrap_or(false);
            match &*k {
                "labelSelector" => out.label_selector = Some(v.into_owned()),
                "fieldSelector" => out.field_selector = Some(v.into_owned()),
                "limit" => out.limit = v.parse().ok().filter(|n: &usize| *n > 0),
                "continue" => out.continue_token = Some(v.into_owned()).filter(|s| !s.is_empty()),
                "resourceVersion" => {
                    out.resource_version = Some(v.into_owned()).filter(|s| !s.is_empty())
                }
                "watch" => out.watch = t,
                "timeoutSeconds" => out.timeout_seconds = v.parse().ok(),
                "allowWatchBookmarks" => out.allow_bookmarks = t,
                "sendInitialEvents" => out.send_initial_events = t,
                "fieldManager" => out.field_manager = Some(v.into_owned()),
                "force" => out.force = t,
                "dryRun" => out.dry_run = !v.is_empty(),
                "propagationPolicy" => out.propagation_policy = Some(v.into_owned()),
                "includeObject" => out.include_object = table::Include::parse(Some(&v)),
                _ => {}
            }
        }
        out
    }

    pub fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let l = match &self.label_selector {
            Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
            None => LabelSelector::default(),
        };
        let f = match &self.field_selector {
            Some(s) => FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
            None => FieldSelector::default(),
        };
        Ok((l, f))
    }
}

/// A request on a stored resource.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    fn ns_str(&self) -> &str {
        self.ns.as_deref().unwrap_or("")
    }
    fn api_version(&self) -> String {
        self.rt.api_version(&self.version)
    }
}

enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3(String, String),
    Health,
    Resource(Target),
}

fn route(registry: &Registry, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Route::Health),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v] => return Ok(Route::Resources(String::new(), v.to_string())),
        ["apis", g, v] => return Ok(Route::Resources(g.to_string(), v.to_string())),
        ["openapi", "v2"] | ["swagger.json"] => return Ok(Route::OpenApiV2),
        ["openapi", "v3"] => return Ok(Route::OpenApiV3Index),
        ["openapi", "v3", "api", v] => return Ok(Route::OpenApiV3(String::new(), v.to_string())),
        ["openapi", "v3", "apis", g, v] => {
            return Ok(Route::OpenApiV3(g.to_string(), v.to_string()))
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let lookup = |plural: &str| registry.lookup(group, version, plural);
    let namespaced_target =
        |ns: &str, plural: &str, name: Option<&str>, sub: Option<&str>| -> Option<Target> {
            let rt = lookup(plural)?;
            if !rt.namespaced {
                return None;
            }
            Some(Target {
                rt,
                version: version.to_string(),
                ns: Some(ns.to_string()),
                name: name.map(str::to_string),
                sub: sub.map(str::to_string),
            })
        };
    let plain_target = |plural: &str, name: Option<&str>, sub: Option<&str>| -> Option<Target> {
        let rt = lookup(plural)?;
        if rt.namespaced && name.is_some() {
            return None;
        }
        Some(Target {
            rt,
            version: version.to_string(),
            ns: None,
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
        })
    };
    let target = match rest {
        ["namespaces", ns, plural] if lookup(plural).is_some_and(|r| r.namespaced) => {
            namespaced_target(ns, plural, None, None)
        }
        ["namespaces", ns, plural, name] if lookup(plural).is_some_and(|r| r.namespaced) => {
            namespaced_target(ns, plural, Some(name), None)
        }
        ["namespaces", ns, plural, name, sub] => {
            namespaced_target(ns, plural, Some(name), Some(sub))
        }
        [plural] => plain_target(plural, None, None),
        [plural, name] => plain_target(plural, Some(name), None),
        [plural, name, sub] => plain_target(plural, Some(name), Some(sub)),
        _ => None,
    };
    target.map(Route::Resource).ok_or_else(not_found)
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> &'static str {
    match (method, t.name.is_some(), t.sub.as_deref()) {
        (_, _, Some("exec")) => "exec",
        (_, _, Some("portforward")) => "portforward",
        (&Method::GET, true, _) => "get",
        (&Method::GET, false, _) if q.watch => "watch",
        (&Method::GET, false, _) => "list",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, true, _) => "delete",
        (&Method::DELETE, false, _) => "deletecollection",
        _ => "unknown",
    }
}

/// Entry point of every HTTP request but the control endpoints (`/sim/...`, which the server
/// hands to [`crate::control::handle`]); other `/sim/...` paths get the usual 404 here.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Reset> {
    let path = req.uri().path().to_string();
    let mut query = Query::parse(req.uri().query());
    query.table = table::wanted(
        req.headers()
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let route = match route(&app.registry, &path) {
        Ok(r) => r,
        Err(e) => return Ok(e.response()),
    };
    let result = match route {
        Route::Version => Ok(json_response(200, &version_doc())),
        Route::Health => {
            let mut r = Response::new(full("ok"));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain"),
            );
            Ok(r)
        }
        Route::CoreVersions => Ok(json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": app.addr.to_string()}]}),
        )),
        Route::Groups => Ok(json_response(200, &app.registry.api_group_list())),
        Route::Group(g) => app
            .registry
            .api_group(&g)
            .map(|d| json_response(200, &d))
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource: group {g}"),
                )
            }),
        Route::Resources(g, v) => app
            .registry
            .api_resource_list(&g, &v)
            .map(|d| json_response(200, &d))
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource: {g}/{v}"),
                )
            }),
        Route::OpenApiV2 => Ok(openapi_v2(
            req.headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        )),
        Route::OpenApiV3Index => Ok(json_response(200, &app.registry.openapi_v3_index())),
        Route::OpenApiV3(g, v) => app
            .registry
            .openapi_v3_doc(&g, &v)
            .map(|d| json_response(200, &d))
            .ok_or_else(|| {
                ApiError::new(404, "NotFound", format!("no OpenAPI document for {g}/{v}"))
            }),
        Route::Resource(target) => {
            let verb = verb_of(req.method(), &target, &query);
            match app.faults.api_fault(verb, &target.rt.plural) {
                Some(ApiFault::Reset) => return Err(Reset),
                Some(ApiFault::Status { code, retry_after }) => {
                    let reason = match code {
                        429 => "TooManyRequests",
                        500 => "InternalError",
                        503 => "ServiceUnavailable",
                        504 => "Timeout",
                        409 => "Conflict",
                        _ => "InternalError",
                    };
                    let mut e = ApiError::new(
                        code,
                        reason,
                        format!("injected fault on {verb} {}", target.rt.plural),
                    );
                    e.retry_after = retry_after;
                    if let Some(secs) = retry_after {
                        e.details = Some(json!({"retryAfterSeconds": secs}));
                    }
                    return Ok(e.response());
                }
                Some(ApiFault::Latency(d)) => tokio::time::sleep(d).await,
                None => {}
            }
            resource_request(&app, target, verb, query, req).await
        }
    };
    Ok(result.unwrap_or_else(|e| e.response()))
}

/// An OpenAPI v2 document without definitions: older kubectl versions validate against it
/// and skip kinds it does not describe. Protobuf when asked for (an empty message), else JSON.
fn openapi_v2(accept: Option<&str>) -> Response<Body> {
    if accept.is_some_and(|a| a.contains("protobuf")) {
        let mut r = Response::new(full(Bytes::new()));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            ),
        );
        return r;
    }
    json_response(
        200,
        &json!({"swagger": "2.0", "info": {"title": "Kubernetes (vast-sim)", "version": "v1.33.0"}, "paths": {}, "definitions": {}}),
    )
}

fn version_doc() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-vast-sim", "gitCommit": "vast-sim",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// The whole request body (400 `BadRequest` when it cannot be read).
pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    req.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))
}

/// JSON, or YAML (server-side apply bodies may be YAML).
fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Ok(v),
        Err(json_err) => serde_yaml::from_slice::<Value>(bytes).map_err(|_| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON or YAML: {json_err}"
            ))
        }),
    }
}

async fn resource_request(
    app: &Arc<App>,
    t: Target,
    verb: &'static str,
    q: Query,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    match t.sub.as_deref() {
        None | Some("status") => {}
        Some("exec") | Some("portforward") => return pod_upgrade(app, &t, req).await,
        Some("log") if t.rt.plural == "pods" && t.rt.group.is_empty() => {
            return logs::pod_log(app, &t, req.uri().query()).await;
        }
        Some(other) => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource: subresource {other}"),
            ))
        }
    }
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        // protobuf creates of the kinds kubectl's generator subcommands send; anything else
        // as a server without protobuf for the type (custom resources) answers
        let unsupported = |why: String| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({why})"),
            )
        };
        if verb != "create" || t.sub.is_some() || content_type.contains("cbor") {
            return Err(unsupported(format!("{content_type} for {verb}")));
        }
        let body = match protobuf::decode(&read_body(req).await?) {
            Ok(b) => b,
            Err(e @ protobuf::Error::Malformed(_)) => {
                return Err(ApiError::bad_request(e.to_string()))
            }
            Err(e) => return Err(unsupported(e.to_string())),
        };
        if &*t.rt.key == SSAR {
            return self_subject_access_review(&t, verb, Some(body));
        }
        return create(app, &t, body, q.dry_run).map(|o| json_response(201, &*versioned(&o, &t)));
    }
    if t.sub.as_deref() == Some("status") && !t.rt.status {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("{} has no status subresource", qualified(&t.rt)),
        ));
    }
    if &*t.rt.key == SSAR {
        let body = match verb {
            "create" => Some(parse_body(&read_body(req).await?)?),
            _ => None,
        };
        return self_subject_access_review(&t, verb, body);
    }
    match verb {
        "get" if q.table => get_object(app, &t).map(|o| {
            let meta = json!({"resourceVersion": store::rv_of(&o).to_string()});
            json_response(
                200,
                &table::table(&t.rt, [&*o], meta, q.include_object, true),
            )
        }),
        "get" => get_object(app, &t).map(|o| json_response(200, &*versioned(&o, &t))),
        "list" => list(app, &t, &q),
        "watch" => watch::watch(app.clone(), t, q),
        "create" => {
            let body = parse_body(&read_body(req).await?)?;
            create(app, &t, body, q.dry_run).map(|o| json_response(201, &*versioned(&o, &t)))
        }
        "update" => {
            let body = parse_body(&read_body(req).await?)?;
            update(app, &t, body).map(|o| json_response(200, &*versioned(&o, &t)))
        }
        "patch" => {
            let ct = req
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let body = parse_body(&read_body(req).await?)?;
            patch_object(app, &t, &ct, body, &q)
        }
        "delete" => {
            let body = parse_body(&read_body(req).await?)?;
            delete(app, &t, &body, &q)
        }
        "deletecollection" => {
            let body = parse_body(&read_body(req).await?)?;
            delete_collection(app, &t, &body, &q)
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("method not allowed on {}", qualified(&t.rt)),
        )),
    }
}

/// Store key of `SelfSubjectAccessReview`s (answered, never stored).
const SSAR: &str = "authorization.k8s.io/selfsubjectaccessreviews";

/// `kubectl auth can-i`: the sim has no authorization, so every review is allowed (as for a
/// cluster admin); the review is answered, never stored.
fn self_subject_access_review(
    t: &Target,
    verb: &str,
    body: Option<Value>,
) -> Result<Response<Body>, ApiError> {
    let Some(mut body) = body.filter(|_| verb == "create" && t.name.is_none()) else {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({verb} {})",
                qualified(&t.rt)
            ),
        ));
    };
    if !body.get("spec").is_some_and(Value::is_object) {
        return Err(ApiError::invalid(
            "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec: Required value",
        ));
    }
    body["apiVersion"] = json!("authorization.k8s.io/v1");
    body["kind"] = json!("SelfSubjectAccessReview");
    body["metadata"] = json!({"creationTimestamp": null});
    body["status"] = json!({"allowed": true, "reason": "vast-sim authorizes every request"});
    Ok(json_response(201, &body))
}

/// The object as the requested version sees it (CRDs may be served in several versions).
fn versioned(obj: &Arc<Value>, t: &Target) -> Arc<Value> {
    let want = t.api_version();
    if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        return obj.clone();
    }
    let mut o = (**obj).clone();
    o["apiVersion"] = json!(want);
    Arc::new(o)
}

fn get_object(app: &App, t: &Target) -> Result<Arc<Value>, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    app.store
        .get(&t.rt.key, t.ns_str(), name)
        .ok_or_else(|| ApiError::not_found(&t.rt, name))
}

#[derive(Serialize)]
struct ListBody<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: Value,
    items: Vec<&'a Value>,
}

#[derive(Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn list(app: &App, t: &Target, q: &Query) -> Result<Response<Body>, ApiError> {
    let (ls, fs) = q.selectors()?;
    let (rv, items) = app.store.list(&t.rt.key, t.ns.as_deref());
    let start = match &q.continue_token {
        Some(tok) => {
            let decoded =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, tok)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            if decoded.rv < app.store.compacted_rv() {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            Some((decoded.ns, decoded.name, decoded.rv))
        }
        None => None,
    };
    let want = t.api_version();
    let rewritten: Vec<Value>;
    let mut matching: Vec<&Value> = items
        .iter()
        .map(|a| &**a)
        .filter(|o| match &start {
            Some((ns, name, _)) => {
                (store::namespace_of(o), store::name_of(o)) > (ns.as_str(), name.as_str())
            }
            None => true,
        })
        .filter(|o| ls.matches(o) && fs.matches(o))
        .collect();
    if matching
        .iter()
        .any(|o| o.get("apiVersion").and_then(Value::as_str) != Some(want.as_str()))
    {
        rewritten = matching
            .iter()
            .map(|o| {
                let mut o = (*o).clone();
                o["apiVersion"] = json!(want);
                o
            })
            .collect();
        matching = rewritten.iter().collect();
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = q.limit {
        if matching.len() > limit {
            let remaining = matching.len() - limit;
            matching.truncate(limit);
            if let Some(last) = matching.last() {
                let tok = ContinueToken {
                    rv: start.as_ref().map(|s| s.2).unwrap_or(rv),
                    ns: store::namespace_of(last).to_string(),
                    name: store::name_of(last).to_string(),
                };
                let bytes = serde_json::to_vec(&tok)
                    .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
                meta["continue"] = json!(base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    bytes
                ));
                meta["remainingItemCount"] = json!(remaining);
            }
        }
    }
    if q.table {
        return Ok(json_response(
            200,
            &table::table(&t.rt, matching, meta, q.include_object, true),
        ));
    }
    Ok(json_response(
        200,
        &ListBody {
            kind: format!("{}List", t.rt.kind),
            api_version: want,
            metadata: meta,
            items: matching,
        },
    ))
}

/// Fills apiVersion, kind, namespace and name (generateName) and checks them against the URL.
fn prepare_new(app: &App, t: &Target, body: &mut Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of a {} must be a JSON object",
            t.rt.kind
        )));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != t.rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind {kind} of the object does not match the URL ({})",
                t.rt.kind
            )));
        }
    }
    body["apiVersion"] = json!(t.rt.preferred_api_version());
    body["kind"] = json!(t.rt.kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    let meta = &mut body["metadata"];
    if t.rt.namespaced {
        let url_ns = t.ns_str();
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => meta["namespace"] = json!(url_ns),
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = if name.is_empty() {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", admission::random_suffix(5)),
            _ => {
                return Err(ApiError::invalid(format!(
                    "{} in version \"{}\" cannot be handled as a {}: metadata.name: Required value: name or generateName is required",
                    t.rt.kind, t.version, t.rt.kind
                )))
            }
        }
    } else {
        name
    };
    if let Some(url_name) = &t.name {
        if *url_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({url_name})"
            )));
        }
    }
    if !admission::valid_name(&name) {
        return Err(ApiError::invalid(format!(
            "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            t.rt.kind
        )));
    }
    meta["name"] = json!(name);
    if t.rt.namespaced {
        let ns = t.ns_str();
        match app.store.get(keys::NAMESPACES, "", ns) {
            None => {
                let mut e = ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
                e.details = Some(json!({"name": ns, "kind": "namespaces"}));
                return Err(e);
            }
            Some(n) if store::is_deleting(&n) => {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", qualified(&t.rt)),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn create(app: &App, t: &Target, mut body: Value, dry_run: bool) -> Result<Arc<Value>, ApiError> {
    if t.name.is_some() {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "POST to a named object is not allowed; POST to the collection",
        ));
    }
    prepare_new(app, t, &mut body)?;
    if t.rt.status && t.rt.plural != "nodes" {
        if let Some(o) = body.as_object_mut() {
            o.remove("status");
        }
    }
    admission::on_create(&app.store, &t.rt.key, &mut body).map_err(ApiError::invalid)?;
    admission::on_write(&t.rt.key, &mut body);
    if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("uid");
    }
    if dry_run {
        return Ok(Arc::new(body));
    }
    let obj = app
        .store
        .create(&t.rt.key, body)
        .map_err(|e| ApiError::from_store(&t.rt, e))?;
    after_write(app, t, &obj);
    Ok(obj)
}

/// Side effects of writes: CRDs become served resources.
fn after_write(app: &App, t: &Target, obj: &Arc<Value>) {
    if &*t.rt.key == keys::CRDS && app.registry.register_crd(obj).is_some() {
        let status = resources::crd_established_status(obj, &store::now_rfc3339());
        let _ = app.store.modify(&t.rt.key, "", store::name_of(obj), |cur| {
            let mut c = cur.clone();
            c["status"] = status;
            Ok(c)
        });
    }
}

/// Keeps the status (main resource) or only takes the status (`/status`).
fn split_status(t: &Target, cur: &Value, mut new: Value) -> Value {
    if !t.rt.status {
        return new;
    }
    if t.sub.as_deref() == Some("status") {
        let mut out = cur.clone();
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if out["status"].is_null() {
            if let Some(o) = out.as_object_mut() {
                o.remove("status");
            }
        }
        out
    } else {
        match cur.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        new
    }
}

fn update(app: &App, t: &Target, mut body: Value) -> Result<Arc<Value>, ApiError> {
    let name = t
        .name
        .clone()
        .ok_or_else(|| ApiError::new(405, "MethodNotAllowed", "PUT needs an object name"))?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of an update must be a JSON object",
        ));
    }
    let want_rv = store::meta_str(&body, "resourceVersion").map(str::to_string);
    body["apiVersion"] = json!(t.rt.preferred_api_version());
    body["kind"] = json!(t.rt.kind);
    if let Some(body_name) = store::meta_str(&body, "name") {
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    let res = app.store.modify(&t.rt.key, t.ns_str(), &name, |cur| {
        if let Some(rv) = &want_rv {
            if rv.parse::<u64>().ok() != Some(store::rv_of(cur)) {
                return Err(store::Error::Conflict {
                    resource: qualified(&t.rt),
                    name: name.clone(),
                    reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
                });
            }
        }
        let mut new = split_status(t, cur, body);
        admission::on_write(&t.rt.key, &mut new);
        if new.get("metadata").and_then(|m| m.get("managedFields")).is_none() {
            if let Some(mf) = cur.pointer("/metadata/managedFields") {
                new["metadata"]["managedFields"] = mf.clone();
            }
        }
        Ok(new)
    });
    finish_write(app, t, &name, res)
}

fn finish_write(
    app: &App,
    t: &Target,
    name: &str,
    res: store::Result<Option<Arc<Value>>>,
) -> Result<Arc<Value>, ApiError> {
    match res {
        Ok(Some(obj)) => {
            after_write(app, t, &obj);
            Ok(obj)
        }
        // removed: the last finalizer of a deleting object went away
        Ok(None) => Ok(Arc::new(
            json!({"kind": t.rt.kind, "apiVersion": t.api_version(), "metadata": {"name": name}}),
        )),
        Err(e) => Err(ApiError::from_store(&t.rt, e)),
    }
}

fn patch_object(
    app: &App,
    t: &Target,
    ct: &str,
    body: Value,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let name = t
        .name
        .clone()
        .ok_or_else(|| ApiError::new(405, "MethodNotAllowed", "PATCH needs an object name"))?;
    let apply = ct == "application/apply-patch+yaml";
    if !matches!(
        ct,
        "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/json-patch+json"
            | "application/apply-patch+yaml"
    ) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {ct}"),
        ));
    }
    if ct == "application/strategic-merge-patch+json" && t.rt.custom {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    if ct != "application/json-patch+json" && !body.is_object() {
        // what decoding the patched document into the kind's Go struct reports
        return Err(ApiError::bad_request(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            match &body {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                _ => "null",
            }
        )));
    }
    let manager = q.field_manager.clone().unwrap_or_default();
    if apply && manager.is_empty() {
        return Err(ApiError::invalid("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
    }
    let exists = app.store.get(&t.rt.key, t.ns_str(), &name).is_some();
    if apply && !exists && t.sub.is_none() {
        let mut obj = patch::server_side_apply(None, &body, &manager, q.force, &t.api_version())
            .map_err(|e| conflict(&t.rt, &name, e))?;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.entry("name").or_insert_with(|| json!(name.clone()));
        }
        let collection = Target {
            name: None,
            ..t.clone()
        };
        let created = create(app, &collection, obj, q.dry_run);
        return match created {
            Err(e) if e.reason == "AlreadyExists" => patch_object(app, t, ct, body, q),
            other => other.map(|o| json_response(201, &*versioned(&o, t))),
        };
    }
    let want_rv = store::meta_str(&body, "resourceVersion").and_then(|s| s.parse::<u64>().ok());
    let qualified_name = qualified(&t.rt);
    let mut patch_err: Option<ApiError> = None;
    let compute = |cur: &Value| -> Result<Value, ApiError> {
        if let Some(rv) = want_rv {
            if rv != store::rv_of(cur) && !apply {
                return Err(ApiError::from_store(
                    &t.rt,
                    store::Error::Conflict {
                        resource: qualified_name.clone(),
                        name: name.clone(),
                        reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
                    },
                ));
            }
        }
        let mut new = cur.clone();
        match ct {
            "application/merge-patch+json" => patch::merge_patch(&mut new, &body),
            "application/strategic-merge-patch+json" => patch::strategic_merge(&mut new, &body),
            "application/json-patch+json" => {
                patch::json_patch(&mut new, &body).map_err(|e| ApiError::invalid(e.to_string()))?
            }
            _ => {
                new =
                    patch::server_side_apply(Some(cur), &body, &manager, q.force, &t.api_version())
                        .map_err(|e| conflict(&t.rt, &name, e))?
            }
        }
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the patched document is not a JSON object",
            ));
        }
        for field in ["apiVersion", "kind"] {
            new[field] = cur[field].clone();
        }
        admission::on_write(&t.rt.key, &mut new);
        Ok(split_status(t, cur, new))
    };
    if q.dry_run {
        let cur = get_object(app, t)?;
        return compute(&cur).map(|o| json_response(200, &o));
    }
    let res = app.store.modify(&t.rt.key, t.ns_str(), &name, |cur| {
        compute(cur).map_err(|e| {
            let msg = e.message.clone();
            patch_err = Some(e);
            store::Error::Invalid(msg)
        })
    });
    if let Some(e) = patch_err {
        return Err(e);
    }
    finish_write(app, t, &name, res).map(|o| json_response(200, &*versioned(&o, t)))
}

fn conflict(rt: &ResourceType, name: &str, e: patch::Error) -> ApiError {
    match e {
        patch::Error::Conflicts(c) => {
            let causes: Vec<Value> =
                c.iter().map(|(m, p)| json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": p})).collect();
            let mut err = ApiError::new(409, "Conflict", patch::Error::Conflicts(c).to_string());
            err.details =
                Some(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}));
            err
        }
        other => ApiError::invalid(other.to_string()),
    }
}

/// The propagation policy of a delete: explicit, from `orphanDependents`, or the resource's
/// default (Orphan for `batch/v1` Jobs as on a real API server, Background otherwise).
fn propagation(t: &Target, body: &Value, q: &Query) -> Result<&'static str, ApiError> {
    let explicit = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| q.propagation_policy.clone());
    match explicit.as_deref() {
        Some("Foreground") => Ok("Foreground"),
        Some("Background") => Ok("Background"),
        Some("Orphan") => Ok("Orphan"),
        Some(other) => Err(ApiError::invalid(format!(
            "DeleteOptions.propagationPolicy: Unsupported value: \"{other}\""
        ))),
        None => match body.get("orphanDependents").and_then(Value::as_bool) {
            Some(true) => Ok("Orphan"),
            Some(false) => Ok("Background"),
            None if &*t.rt.key == keys::JOBS => Ok("Orphan"),
            None => Ok("Background"),
        },
    }
}

fn delete_one(
    app: &App,
    t: &Target,
    ns: &str,
    name: &str,
    policy: &str,
    body: &Value,
) -> Result<(Arc<Value>, bool), ApiError> {
    if &*t.rt.key == keys::NAMESPACES {
        let res = app.store.modify(&t.rt.key, "", name, |cur| {
            let mut c = cur.clone();
            c["status"] = json!({"phase": "Terminating"});
            Ok(c)
        });
        res.map_err(|e| ApiError::from_store(&t.rt, e))?;
        let (obj, _) = app
            .store
            .delete(&t.rt.key, "", name, Some("kubernetes"), None, None)
            .map_err(|e| ApiError::from_store(&t.rt, e))?;
        return Ok((obj, false));
    }
    let extra = match policy {
        "Foreground" => Some("foregroundDeletion"),
        "Orphan" => Some("orphan"),
        _ => None,
    };
    let uid = body.pointer("/preconditions/uid").and_then(Value::as_str);
    let rv = body
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let (obj, removed) = app
        .store
        .delete(&t.rt.key, ns, name, extra, uid, rv)
        .map_err(|e| ApiError::from_store(&t.rt, e))?;
    if removed && &*t.rt.key == keys::CRDS {
        if let Some(group) = obj.pointer("/spec/group").and_then(Value::as_str) {
            if let Some(plural) = obj.pointer("/spec/names/plural").and_then(Value::as_str) {
                app.registry.unregister(&format!("{group}/{plural}"));
            }
        }
    }
    Ok((obj, removed))
}

/// The answer to a DELETE as the generic registry's `finalizeDelete` gives it: the object
/// while it is still there (finalizers) and for kinds that return the deleted object (pods,
/// namespaces, CRDs), else a `Success` Status naming it.
fn delete_answer(t: &Target, obj: &Arc<Value>, removed: bool) -> Response<Body> {
    let returns_object = matches!(&*t.rt.key, keys::PODS | keys::NAMESPACES | keys::CRDS);
    if !removed || returns_object {
        return json_response(200, &*versioned(obj, t));
    }
    let mut details =
        json!({"name": store::name_of(obj), "kind": t.rt.plural, "uid": store::uid_of(obj)});
    if !t.rt.group.is_empty() {
        details["group"] = json!(t.rt.group);
    }
    json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    )
}

fn delete(app: &App, t: &Target, body: &Value, q: &Query) -> Result<Response<Body>, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let policy = propagation(t, body, q)?;
    if q.dry_run
        || body
            .get("dryRun")
            .is_some_and(|d| d.as_array().is_some_and(|a| !a.is_empty()))
    {
        let obj = get_object(app, t)?;
        let removed = store::finalizers_of(&obj).is_empty() && policy == "Background";
        return Ok(delete_answer(t, &obj, removed));
    }
    let (obj, removed) = delete_one(app, t, t.ns_str(), &name, policy, body)?;
    Ok(delete_answer(t, &obj, removed))
}

fn delete_collection(
    app: &App,
    t: &Target,
    body: &Value,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let (ls, fs) = q.selectors()?;
    let policy = propagation(t, body, q)?;
    let (_, items) = app.store.list(&t.rt.key, t.ns.as_deref());
    let mut deleted = Vec::new();
    for o in items.iter().filter(|o| ls.matches(o) && fs.matches(o)) {
        if q.dry_run {
            deleted.push(o.clone());
            continue;
        }
        match delete_one(
            app,
            t,
            store::namespace_of(o),
            store::name_of(o),
            policy,
            body,
        ) {
            Ok((d, _)) => deleted.push(d),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rv = app.store.current_rv();
    Ok(json_response(
        200,
        &ListBody {
            kind: format!("{}List", t.rt.kind),
            api_version: t.api_version(),
            metadata: json!({"resourceVersion": rv.to_string()}),
            items: deleted.iter().map(|a| &**a).collect(),
        },
    ))
}

async fn pod_upgrade(
    app: &App,
    t: &Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !(t.rt.group.is_empty() && t.rt.plural == "pods") {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "{} has no {} subresource",
                qualified(&t.rt),
                t.sub.as_deref().unwrap_or("")
            ),
        ));
    }
    let pod = get_object(app, t)?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "pod {} is not running (phase {phase}); cannot {}",
            store::name_of(&pod),
            t.sub.as_deref().unwrap_or("")
        )));
    }
    let resolved = crate::controllers::resolve::resolve_pod(&app.store, &pod).map_err(|e| {
        ApiError::new(
            500,
            "InternalError",
            format!("cannot resolve pod {}: {e}", store::name_of(&pod)),
        )
    })?;
    let resp = if t.sub.as_deref() == Some("exec") {
        app.dataplane.handle_exec(&resolved, req).await
    } else {
        app.dataplane.handle_portforward(&resolved, req).await
    };
    Ok(resp.map(|b| b.boxed()))
}
