//! # vast-sim
//!
//! A simulated Kubernetes cluster that the real `kubectl` and kube-rs both accept: an HTTP API
//! server for the subset of Kubernetes vast uses, a scheduler/kubelet stand-in, a job
//! controller, a small Kueue, and the data plane of vast's `robovast` pod (S3, HTTP file server,
//! port-forward, exec), with faults on demand. See `sim/README.md` for what is simulated and
//! what is not.
//!
//! Code map:
//! - [`server`]: `Sim::start(config)`: binds the listener, wires everything, sends each request
//!   to [`control`] or [`api`], writes kubeconfigs;
//! - [`api`]: the Kubernetes API: HTTP routing, discovery/OpenAPI, verbs, watch, pod logs,
//!   protobuf creates, `Status` errors;
//! - [`control`]: the sim's control endpoints (`/sim/faults`, `/sim/stats`, `/sim/compact`,
//!   `/sim/pods/{ns}/{name}/restart`);
//! - [`store`]: the object store (resourceVersion, watch history, finalizers) and the store
//!   keys of the built-in resources;
//! - [`admission`]: defaulting and mutation of new objects, shared by the API and the
//!   controllers;
//! - [`selector`]: label and field selectors;
//! - [`controllers`]: garbage collection, service accounts, endpoints, scheduler/kubelet, job
//!   controller, Kueue, Events, pod resolution;
//! - [`pod`]: a pod as the data plane sees it (env and volumes resolved);
//! - [`dataplane`]: per-pod S3 endpoint, HTTP file server, port-forward and exec websockets,
//!   simulated scenario results;
//! - [`faults`]: fault injection (API errors, latency, resets, stream drops, S3 errors, pod
//!   preemption, scenario outcomes by rule), seeded, and the sim's counters (`SimStats`);
//! - [`config`]: the sim's configuration (YAML file, flags);
//! - [`scale`]: `vast-sim scale`, the sim's memory-per-Job and creates/s measurement.
//!
//! Layering: each module imports only modules that come after it in `scale`, `server`, `control`,
//! `api`, `controllers`, `config`, `dataplane`, `admission`, `selector`, `faults`, `pod`,
//! `store`. So `control` uses `api` (its `App`, `ApiError` and response helpers) and the
//! controllers (pod restarts), `api` uses the controllers only to resolve a pod for
//! exec/port-forward, and neither the controllers nor the data plane import `api` or `control`.

pub mod admission;
pub mod api;
pub mod config;
pub mod control;
pub mod controllers;
pub mod dataplane;
pub mod faults;
pub mod pod;
pub mod scale;
pub mod selector;
pub mod server;
pub mod store;
