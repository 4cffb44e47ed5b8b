//! The engine's store contract (steno's `SecStore`): what the executor needs from whatever
//! keeps a run's journal, and an in-memory implementation for tests.
//!
//! The engine defines the contract and the consumer implements it: `src/store/` implements
//! [`JournalStores`] and [`JournalStore`] over `vast-state` (sled and the frame log), so
//! nothing in `src/engine` names a store type. A store reports losses it detected when it
//! opened a run ([`JournalLoss`]); the executor refuses to resume such a run unless told to
//! accept the loss ([`EngineOptions::accept_journal_loss`](super::EngineOptions)), because a
//! journal that lost records cannot prove which effects already happened.
//!
//! [`MemoryStores`] keeps journals in memory (shared between handles, so a "crash" followed
//! by a re-open sees exactly the records appended before it): the engine's property tests use
//! it to run thousands of crash/resume cycles without touching the disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::journal::Event;
use super::view::RunView;
use super::RunId;

/// An error of the store, opaque to the engine (its `Display` and `source` chain are shown).
pub type StoreFailure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Records a store found missing when it opened a run: the journal that survived is a strict
/// prefix of what was written, so replaying it may repeat effects that already happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLoss {
    /// Records that could be read (the surviving prefix).
    pub kept: u64,
    /// Records known to have existed (e.g. counted by the last snapshot), when known.
    pub known: Option<u64>,
    /// What was found, naming the files involved.
    pub detail: String,
}

impl std::fmt::Display for JournalLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.known {
            Some(n) => write!(
                f,
                "{} of {n} journal records readable: {}",
                self.kept, self.detail
            ),
            None => write!(f, "{} journal records readable: {}", self.kept, self.detail),
        }
    }
}

/// One open run's journal, held exclusively by the executor while it runs.
pub trait JournalStore: Send + 'static {
    /// The run this journal belongs to.
    fn run_id(&self) -> &RunId;
    /// Appends one event; it survives the process being killed once this returns.
    fn append(&mut self, ev: &Event) -> Result<(), StoreFailure>;
    /// Every event appended so far, in order.
    fn replay(&self) -> Result<Vec<Event>, StoreFailure>;
    /// Makes every appended event durable now.
    fn flush(&mut self) -> Result<(), StoreFailure>;
    /// Replaces the run's inspection view (read by `vast runs` while the run executes).
    fn snapshot(&mut self, view: &RunView) -> Result<(), StoreFailure>;
    /// The run's first record is durable: the run exists from now on.
    fn mark_created(&mut self) -> Result<(), StoreFailure> {
        Ok(())
    }
    /// The previous executor this open took over from (its process is gone), described.
    fn took_over_from(&self) -> Option<String> {
        None
    }
    /// Records lost before this open, if the store detected any. A store keeps reporting a
    /// loss (across opens) until [`JournalStore::accept_loss`].
    fn loss(&self) -> Option<JournalLoss> {
        None
    }
    /// The executor was told to continue from what survived (`vast resume --force`): the
    /// loss is no longer reported.
    fn accept_loss(&mut self) -> Result<(), StoreFailure> {
        Ok(())
    }
}

/// Where runs' journals live: creates new ones and opens existing ones for execution.
pub trait JournalStores {
    type Store: JournalStore;
    /// Creates the journal of a new run `id` (an error if it exists).
    fn create(&self, id: &RunId) -> Result<Self::Store, StoreFailure>;
    /// Opens the journal of run `id` for execution.
    fn open(&self, id: &RunId) -> Result<Self::Store, StoreFailure>;
}

#[derive(Default)]
struct MemoryRun {
    events: Vec<Event>,
    snapshot: Option<RunView>,
    open: bool,
}

/// Journals kept in memory; clones share them, so a run re-opened after a simulated crash sees
/// the records appended before it.
#[derive(Clone, Default)]
pub struct MemoryStores {
    runs: Arc<Mutex<HashMap<RunId, MemoryRun>>>,
}

/// An open in-memory journal (closed on drop).
pub struct MemoryStore {
    id: RunId,
    runs: Arc<Mutex<HashMap<RunId, MemoryRun>>>,
}

#[derive(Debug, thiserror::Error)]
enum MemoryError {
    #[error("run '{0}' already exists")]
    Exists(String),
    #[error("unknown run '{0}'")]
    Unknown(String),
    #[error("run '{0}' is open elsewhere")]
    Busy(String),
    #[error("the in-memory store's lock was poisoned")]
    Poisoned,
}

impl MemoryStores {
    pub fn new() -> MemoryStores {
        MemoryStores::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<RunId, MemoryRun>>, StoreFailure> {
        self.runs.lock().map_err(|_| MemoryError::Poisoned.into())
    }

    /// The events of run `id` (empty if unknown).
    pub fn events(&self, id: &RunId) -> Vec<Event> {
        self.runs
            .lock()
            .map(|r| r.get(id).map(|m| m.events.clone()).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl JournalStores for MemoryStores {
    type Store = MemoryStore;

    fn create(&self, id: &RunId) -> Result<MemoryStore, StoreFailure> {
        let mut runs = self.lock()?;
        if runs.contains_key(id) {
            return Err(MemoryError::Exists(id.to_string()).into());
        }
        runs.insert(
            id.clone(),
            MemoryRun {
                open: true,
                ..MemoryRun::default()
            },
        );
        Ok(MemoryStore {
            id: id.clone(),
            runs: self.runs.clone(),
        })
    }

    fn open(&self, id: &RunId) -> Result<MemoryStore, StoreFailure> {
        let mut runs = self.lock()?;
        let run = runs
            .get_mut(id)
            .ok_or_else(|| MemoryError::Unknown(id.to_string()))?;
        if run.open {
            return Err(MemoryError::Busy(id.to_string()).into());
        }
        run.open = true;
        Ok(MemoryStore {
            id: id.clone(),
            runs: self.runs.clone(),
        })
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.runs.lock() {
            if let Some(r) = runs.get_mut(&self.id) {
                r.open = false;
            }
        }
    }
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut MemoryRun) -> T) -> Result<T, StoreFailure> {
        let mut runs = self.runs.lock().map_err(|_| MemoryError::Poisoned)?;
        let run = runs
            .get_mut(&self.id)
            .ok_or_else(|| MemoryError::Unknown(self.id.to_string()))?;
        Ok(f(run))
    }
}

impl JournalStore for MemoryStore {
    fn run_id(&self) -> &RunId {
        &self.id
    }
    fn append(&mut self, ev: &Event) -> Result<(), StoreFailure> {
        self.with(|r| r.events.push(ev.clone()))
    }
    fn replay(&self) -> Result<Vec<Event>, StoreFailure> {
        self.with(|r| r.events.clone())
    }
    fn flush(&mut self) -> Result<(), StoreFailure> {
        Ok(())
    }
    fn snapshot(&mut self, view: &RunView) -> Result<(), StoreFailure> {
        self.with(|r| r.snapshot = Some(view.clone()))
    }
}
