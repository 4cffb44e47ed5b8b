//! # vast-sim
//!
//! A simulated Kubernetes cluster that the real `kubectl` and kube-rs both accept: an HTTP API
//! server for the subset of Kubernetes vast uses, a scheduler/kubelet stand-in, a job
//! controller, a small Kueue, and the data plane of vast's `robovast` pod (S3, HTTP file server,
//! port-forward, exec), with faults on demand. See `sim/README.md` for what is simulated and
//! what is not.
//!
//! Code map:
//! - [`server`]: `Sim::start(config)`: binds the listener, wires everything, writes kubeconfigs;
//! - [`api`]: HTTP routing, discovery/OpenAPI, verbs, watch, `Status` errors;
//! - [`store`]: the object store (resourceVersion, selectors, finalizers, garbage collection);
//! - [`controllers`]: scheduler/kubelet, job controller, Kueue;
//! - [`pod`]: a pod as the data plane sees it (env and volumes resolved);
//! - [`dataplane`]: per-pod S3 endpoint, HTTP file server, port-forward and exec websockets,
//!   simulated scenario results;
//! - [`faults`]: fault injection (API errors, latency, resets, stream drops, S3 errors), seeded.

pub mod api;
pub mod config;
pub mod controllers;
pub mod dataplane;
pub mod faults;
pub mod pod;
pub mod server;
pub mod store;
