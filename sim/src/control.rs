//! The sim's control endpoints ("admin endpoints" in `sim/README.md`), plain HTTP beside the
//! Kubernetes API on the same port:
//!
//! - `GET`/`PUT /sim/faults`: the fault configuration as JSON ([`crate::faults::Faults::get`],
//!   [`crate::faults::Faults::set`]);
//! - `POST /sim/pods/{ns}/{name}/restart?wipe=true|false`: restarts a running pod's containers
//!   ([`crate::controllers::kubelet::restart_pod`]);
//! - `GET /sim/stats`: counters since start ([`crate::faults::SimStats`]: preempted pods and
//!   their Jobs, pods created by the job controller, pod failures ignored/counted by
//!   `podFailurePolicy`, Jobs failed by a `FailJob` rule);
//! - `POST /sim/compact` (any method is accepted): forgets the watch history and closes open
//!   watches ([`crate::store::Store::compact`]).
//!
//! The server asks [`route`] first and sends the request here when it names one of these
//! endpoints, else to [`crate::api::handle`] (which answers other `/sim/...` paths with its
//! usual 404). Errors are `Status` objects ([`ApiError`]); no API faults are injected here.
//! This module sits above the store and the controllers and beside the API, whose [`App`],
//! [`ApiError`] and response helpers it uses; neither the API nor the controllers import it.

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::json;

use crate::api::{json_response, read_body, ApiError, App, Body};
use crate::controllers::kubelet::{self, RestartError};
use crate::faults::FaultConfig;

/// A control endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/sim/faults`
    Faults,
    /// `/sim/compact`
    Compact,
    /// `/sim/stats`
    Stats,
    /// `/sim/pods/{namespace}/{name}/restart`
    Restart { ns: String, name: String },
}

/// The control endpoint a request path names, if any (empty segments are ignored, as in the
/// API's routing).
pub fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["sim", "faults"] => Some(Route::Faults),
        ["sim", "compact"] => Some(Route::Compact),
        ["sim", "stats"] => Some(Route::Stats),
        ["sim", "pods", ns, name, "restart"] => Some(Route::Restart {
            ns: ns.to_string(),
            name: name.to_string(),
        }),
        _ => None,
    }
}

/// Answers a request on a control endpoint; errors become `Status` responses.
pub async fn handle(app: &App, route: Route, req: Request<Incoming>) -> Response<Body> {
    let result = match route {
        Route::Faults => faults(app, req).await,
        Route::Compact => {
            app.store.compact();
            Ok(json_response(
                200,
                &json!({"compactedTo": app.store.compacted_rv()}),
            ))
        }
        Route::Restart { ns, name } => restart(app, &ns, &name, req).await,
        Route::Stats if req.method() == Method::GET => Ok(json_response(200, &app.faults.stats())),
        Route::Stats => Err(ApiError::new(405, "MethodNotAllowed", "use GET /sim/stats")),
    };
    result.unwrap_or_else(|e| e.response())
}

async fn faults(app: &App, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    match *req.method() {
        Method::GET => Ok(json_response(200, &app.faults.get())),
        Method::PUT | Method::POST => {
            let body = read_body(req).await?;
            let cfg: FaultConfig = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid fault config: {e}")))?;
            app.faults.set(cfg);
            Ok(json_response(200, &app.faults.get()))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "use GET or PUT /sim/faults",
        )),
    }
}

async fn restart(
    app: &App,
    ns: &str,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "use POST /sim/pods/{namespace}/{name}/restart?wipe=true|false",
        ));
    }
    let wipe = wipe_param(req.uri().query());
    kubelet::restart_pod(&app.store, &app.dataplane, ns, name, wipe)
        .await
        .map(|pod| json_response(200, &*pod))
        .map_err(restart_error)
}

/// `wipe=true` or `wipe=1` (the last `wipe` parameter counts; default false).
fn wipe_param(query: Option<&str>) -> bool {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "wipe")
        .last()
        .is_some_and(|(_, v)| crate::selector::parse_bool(&v) == Some(true))
}

/// 404 for a missing pod, 400 for one that is not running, 500 otherwise.
fn restart_error(e: RestartError) -> ApiError {
    match e {
        RestartError::NotFound { .. } => ApiError::new(404, "NotFound", e.to_string()),
        RestartError::NotRunning { .. } => ApiError::bad_request(e.to_string()),
        RestartError::Store(_) | RestartError::Resolve(_) | RestartError::DataPlane { .. } => {
            ApiError::new(500, "InternalError", e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_the_control_endpoints() {
        assert_eq!(route("/sim/faults"), Some(Route::Faults));
        assert_eq!(route("//sim/faults/"), Some(Route::Faults));
        assert_eq!(route("/sim/compact"), Some(Route::Compact));
        assert_eq!(route("/sim/stats"), Some(Route::Stats));
        assert_eq!(
            route("/sim/pods/default/robovast/restart"),
            Some(Route::Restart {
                ns: "default".into(),
                name: "robovast".into()
            })
        );
        for other in [
            "/sim",
            "/sim/nope",
            "/sim/pods/default/robovast",
            "/api/v1/namespaces/default/pods",
            "/version",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
    }

    #[test]
    fn wipe_is_true_or_1_and_the_last_one_counts() {
        assert!(!wipe_param(None));
        assert!(!wipe_param(Some("")));
        assert!(wipe_param(Some("wipe=true")));
        assert!(wipe_param(Some("wipe=1")));
        assert!(!wipe_param(Some("wipe=false")));
        assert!(!wipe_param(Some("wipe=yes")));
        assert!(wipe_param(Some("wipe=false&wipe=true")));
        assert!(!wipe_param(Some("wipe=true&wipe=false")));
        assert!(wipe_param(Some("x=1&wipe=true&y=2")));
    }

    #[test]
    fn restart_errors_keep_their_status_codes_and_messages() {
        let e = restart_error(RestartError::NotFound { name: "p".into() });
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (404, "NotFound", "pods \"p\" not found")
        );
        let e = restart_error(RestartError::NotRunning {
            ns: "default".into(),
            name: "p".into(),
        });
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (
                400,
                "BadRequest",
                "pod default/p is not running; only running pods can be restarted"
            )
        );
        let e = restart_error(RestartError::Store(crate::store::Error::Invalid(
            "bad".into(),
        )));
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (500, "InternalError", "bad")
        );
    }
}
