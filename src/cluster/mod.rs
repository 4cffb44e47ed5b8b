//! The cluster access layer: a kube [`client`] from the kubeconfig (context, exec auth
//! plugins), API [`error`] classification for the engine, generic [`objects`] (server-side
//! apply, tolerant deletes), Kueue specifics ([`kueue`]), the reconnecting
//! [`portforward`] supervisor, short [`exec`] calls into a pod, a scenario run's objects
//! ([`runs`]: selector, Workloads, removal), and the in-cluster [`s3`] client with the
//! resumable upload, bucket listing and removal.

pub mod client;
pub mod error;
pub mod exec;
pub mod kueue;
pub mod objects;
pub mod portforward;
pub mod runs;
pub mod s3;
