//! The `Step` trait, the context a step runs with (parameters, ancestor outputs, map item,
//! cursor, progress, failed items, budgets, cancellation, typed non-persisted resources), and
//! the registry binding implementation names to steps. Step errors: [`super::error`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::sync::CancellationToken;

pub use super::error::{ErrorKind, StepError};
use super::journal::{ItemFailure, StepKey};
use super::RunId;

/// A step implementation. Steps must be idempotent: re-running one after a crash at any point
/// converges to the same world. Retries are the engine's job, not the step's.
pub trait Step: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        cx: &'a StepContext,
    ) -> BoxFuture<'a, Result<serde_json::Value, StepError>>;
}

/// Typed, non-persisted resources handed to steps (clients, configuration). The engine does
/// not know the types.
#[derive(Default, Clone)]
pub struct Resources(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl Resources {
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0
            .get(&TypeId::of::<T>())
            .cloned()
            .and_then(|a| a.downcast::<T>().ok())
    }
}

/// Implementation name → step.
#[derive(Default, Clone)]
pub struct Registry(HashMap<String, Arc<dyn Step>>);

impl Registry {
    pub fn register(&mut self, name: &str, step: impl Step) {
        self.0.insert(name.to_string(), Arc::new(step));
    }
    pub fn get(&self, name: &str) -> Option<Arc<dyn Step>> {
        self.0.get(name).cloned()
    }
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Everything one attempt of a step gets.
pub struct StepContext {
    pub(crate) run_id: RunId,
    pub(crate) key: StepKey,
    pub(crate) attempt: u32,
    pub(crate) params: Arc<serde_json::Value>,
    pub(crate) inputs: HashMap<String, Arc<serde_json::Value>>,
    pub(crate) item: Option<serde_json::Value>,
    pub(crate) resources: Arc<Resources>,
    pub(crate) cancel: CancellationToken,
    pub(crate) checkpoints: Arc<dyn Checkpoints>,
    pub(crate) failed_items: Arc<Vec<ItemFailure>>,
    pub(crate) budgets: std::collections::BTreeMap<String, u32>,
}

/// The narrow part of the journal a step reaches: the cursor and progress of its own key.
/// The executor implements it over the run's journal; steps never see the journal itself.
pub trait Checkpoints: Send + Sync {
    /// The last cursor saved for `key` (JSON text).
    fn cursor(&self, key: &StepKey) -> Result<Option<String>, StepError>;
    /// Journals `cursor` for `key` (with the progress last reported for it).
    fn save_cursor(&self, key: &StepKey, cursor: String) -> Result<(), StepError>;
    /// Reports progress of `key` (not journaled until the next cursor).
    fn progress(&self, key: &StepKey, done: u64, total: u64);
}

impl StepContext {
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }
    /// This step (or map child).
    pub fn key(&self) -> &StepKey {
        &self.key
    }
    /// 1-based attempt number (counting every attempt since the run started).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// The map child's index.
    pub fn index(&self) -> Option<u64> {
        self.key.child
    }
    /// Parameter `name` of the run.
    pub fn param<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StepError> {
        match self.params.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| StepError::permanent(format!("parameter '{name}': {e}"))),
        }
    }
    /// The output of ancestor `step` (listed in the step's `inputs:`).
    pub fn output<T: DeserializeOwned>(&self, step: &str) -> Result<T, StepError> {
        let v = self.inputs.get(step).ok_or_else(|| {
            StepError::permanent(format!(
                "step {} reads output of '{step}', which is not in its inputs",
                self.key
            ))
        })?;
        T::deserialize(&**v).map_err(|e| StepError::permanent(format!("output of '{step}': {e}")))
    }
    /// The map items of this run that failed for good before this step started
    /// (`on_item_failure: continue`), with their errors; empty for map children.
    pub fn failed_items(&self) -> &[ItemFailure] {
        &self.failed_items
    }
    /// The step's budget `name` from its workflow definition (`budgets: {name: n}`); a
    /// definition without it is a permanent error naming the step and the budget.
    pub fn budget(&self, name: &str) -> Result<u32, StepError> {
        self.budgets.get(name).copied().ok_or_else(|| {
            StepError::permanent(format!(
                "step {} needs `budgets: {{{name}: N}}` in its workflow definition",
                self.key
            ))
        })
    }
    /// The item of a map child.
    pub fn item<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        let v = self
            .item
            .as_ref()
            .ok_or_else(|| StepError::permanent(format!("step {} is not a map child", self.key)))?;
        T::deserialize(v)
            .map_err(|e| StepError::permanent(format!("map item of {}: {e}", self.key)))
    }
    /// The last cursor saved for this step (by this or an earlier attempt), if any.
    pub fn cursor<T: DeserializeOwned>(&self) -> Result<Option<T>, StepError> {
        match self.checkpoints.cursor(&self.key)? {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| StepError::permanent(format!("cursor of {}: {e}", self.key))),
        }
    }
    /// Persists a fine checkpoint; a later attempt (also after a crash) starts from it. The
    /// progress last reported with [`StepContext::progress`] is journaled with it (report the
    /// progress the cursor stands for first), so `vast runs show` gives it after the run stopped.
    pub fn save_cursor<T: Serialize>(&self, cursor: &T) -> Result<(), StepError> {
        let text = serde_json::to_string(cursor)
            .map_err(|e| StepError::permanent(format!("cursor of {}: {e}", self.key)))?;
        self.checkpoints.save_cursor(&self.key, text)
    }
    /// Reports progress (e.g. bytes done/total), shown by `vast runs show` while the run
    /// executes; persisted with the next [`StepContext::save_cursor`].
    pub fn progress(&self, done: u64, total: u64) {
        self.checkpoints.progress(&self.key, done, total);
    }
    /// The cancellation token: steps should stop at the next safe point once it fires.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    /// A resource of type `T` (e.g. a client) provided by the caller.
    pub fn resource<T: Any + Send + Sync>(&self) -> Result<Arc<T>, StepError> {
        self.resources.get::<T>().ok_or_else(|| {
            StepError::permanent(format!(
                "step {} needs a resource of type {}",
                self.key,
                std::any::type_name::<T>()
            ))
        })
    }
}
