//! The user's project: `.vast` parsing, project files, configuration generation and
//! per-cluster resource resolution. Pure: no cluster access.
