//! Kubernetes and in-cluster S3 access: a kube [`client`] from the kubeconfig, a local
//! [`portforward`] bridge to a pod port, and the [`s3`] client with the idempotent directory
//! upload.
//!
//! Grows into the full cluster access layer (reconnecting port-forward supervisor, exec).

pub mod client;
pub mod portforward;
pub mod s3;
