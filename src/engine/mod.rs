//! The workflow engine: DAG definitions, step trait, retry policy, executor and run lifecycle.
//!
//! **Architecture invariant:** nothing here knows Kubernetes, S3 or sled.
