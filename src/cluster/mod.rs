//! Kubernetes access (kube crate), the port-forward supervisor, exec and the S3 client.
//!
//! Not built yet: see the cluster-operations issue.
