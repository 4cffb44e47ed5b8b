//! The one integration-test binary: each area adds a `mod` line.

mod project;
mod project_entrypoint;
mod project_upload;
