//! The workflow engine: DAG definitions, step trait, retry policy, executor and run lifecycle.
//!
//! **Architecture invariant:** nothing here knows Kubernetes, S3 or sled.
//!
//! - [`definition`]: the YAML format of `workflows/` and its validation;
//! - [`retry`]: `RetryPolicy`, `retry_if`, `FailureBudget` (the only user of the `backoff` crate);
//! - [`error`]: `StepError` and `ErrorKind` (transient / permanent / cancelled);
//! - [`step`]: the `Step` trait, `StepContext`, `Registry`, `Resources`;
//! - [`journal`]: events, the checked step state machine, `RunState` replay;
//! - [`executor`]: `Engine::create` / `Engine::execute` (start and resume);
//! - [`store`]: the store contract the engine needs (`JournalStores`, `JournalStore`), which
//!   `src/store/` implements, and `MemoryStores` for tests;
//! - [`view`]: the inspection view (`vast runs show`, snapshots, `--json`).

pub mod definition;
pub mod error;
pub mod executor;
pub mod journal;
pub mod retry;
pub mod run_id;
pub mod step;
pub mod store;
pub mod view;

pub use definition::{Definition, DefinitionError};
pub use executor::{Engine, EngineError, EngineOptions, Injection, Outcome};
pub use run_id::RunId;
pub use step::{ErrorKind, Registry, Resources, Step, StepContext, StepError};
pub use store::{JournalLoss, JournalStore, JournalStores, MemoryStores, StoreFailure};
