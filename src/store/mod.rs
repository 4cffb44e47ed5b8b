//! The engine's store contract ([`JournalStores`], [`JournalStore`]) implemented over the
//! `vast-state` crate (sled + bincode live there): the state-directory layout, opening runs
//! under their lease, appending journal events (with failpoints before and after every write),
//! the inspection snapshot, and the detection of lost records (the frame log damaged where
//! sled cannot cover it, or a snapshot that counted more records than the journal holds),
//! reported to the engine as a [`JournalLoss`].
//!
//! Layout of a state directory:
//!
//! ```text
//! <state dir>/runs/<run-id>/db/        sled database: the run's append-only journal
//! <state dir>/runs/<run-id>/lease      flock'd lease naming the executing pid and host
//! <state dir>/runs/<run-id>/snapshot   the run's view (atomically replaced), for inspection
//! <state dir>/runs/<run-id>/creating   present until the run's first record is durable: a
//!                                      run killed while being created never existed
//! ```

use std::path::{Path, PathBuf};

use vast_state::{Holder, Lease, LeaseError, RunDb};

use crate::engine::journal::{Event, ReplayError, RunState};
use crate::engine::view::RunView;
use crate::engine::{JournalLoss, JournalStore, JournalStores, RunId, StoreFailure};

const EVENT_KIND: u8 = 1;
/// Marker of a run directory whose first record is not written yet.
const CREATING: &str = "creating";
/// Marker of a run whose journal lost records (what was found): reported on every open until
/// `vast resume --force` accepts the loss, so repairs made while opening (a frame log restored
/// from sled, a snapshot rewritten) never hide it.
const LOST: &str = "lost";
const SNAPSHOT_KIND: u8 = 2;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown run '{id}' (no {dir})")]
    UnknownRun { id: String, dir: PathBuf },
    #[error("run '{id}' already exists in {dir}")]
    Exists { id: String, dir: PathBuf },
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("run store error")]
    State(#[from] vast_state::Error),
    #[error("the journal of run '{id}' cannot be replayed")]
    Replay {
        id: String,
        #[source]
        source: ReplayError,
    },
    #[error("injected crash at failpoint {0}")]
    Injected(&'static str),
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The snapshot in run directory `dir`.
fn read_snapshot(dir: &Path) -> Result<Option<RunView>, StoreError> {
    Ok(vast_state::read_record_file(
        &dir.join("snapshot"),
        SNAPSHOT_KIND,
    )?)
}

/// A state directory holding runs.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// A run found in a state directory, as seen without opening it.
#[derive(Debug)]
pub struct RunEntry {
    pub id: String,
    pub snapshot: Result<Option<RunView>, StoreError>,
    pub holder: Option<Holder>,
}

fn me() -> Holder {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    Holder {
        pid: std::process::id(),
        host,
        since: jiff::Timestamp::now().to_string(),
    }
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runs().join(id)
    }

    /// Creates the directory of a new run, takes its lease and opens its database.
    pub fn create_run(&self, id: &RunId) -> Result<RunStore, StoreError> {
        let runs = self.runs();
        std::fs::create_dir_all(&runs).map_err(|source| StoreError::Io {
            path: runs.clone(),
            source,
        })?;
        let dir = self.run_dir(id.as_str());
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists {
                    id: id.to_string(),
                    dir,
                })
            }
            Err(source) => return Err(StoreError::Io { path: dir, source }),
        }
        let marker = dir.join(CREATING);
        std::fs::write(&marker, b"").map_err(|source| StoreError::Io {
            path: marker,
            source,
        })?;
        RunStore::open_in(id.as_str(), &dir, true)
    }

    /// Whether the run directory is complete: it has a database and its creation finished
    /// (a process killed between creating the directory and writing the run's first record
    /// leaves a directory that is not a run).
    fn is_run(dir: &Path) -> bool {
        dir.join("db").is_dir() && !dir.join(CREATING).exists()
    }

    /// Opens an existing run for execution (takes its lease, recording this process).
    pub fn open_run(&self, id: &str) -> Result<RunStore, StoreError> {
        self.open_existing(id, true)
    }

    /// Opens an existing run for inspection: takes the lease while open but leaves the
    /// recorded holder (the last executor) in place.
    pub fn open_run_for_reading(&self, id: &str) -> Result<RunStore, StoreError> {
        self.open_existing(id, false)
    }

    fn open_existing(&self, id: &str, executing: bool) -> Result<RunStore, StoreError> {
        let dir = self.run_dir(id);
        if !Self::is_run(&dir) {
            return Err(StoreError::UnknownRun {
                id: id.to_string(),
                dir,
            });
        }
        RunStore::open_in(id, &dir, executing)
    }

    /// Removes run `id` (its journal, lease and snapshot) unless a live process executes it
    /// ([`StoreError::Lease`] then): the lease is taken first, so no executor can start
    /// while it goes.
    pub fn remove_run(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.run_dir(id);
        if !dir.is_dir() {
            return Err(StoreError::UnknownRun {
                id: id.to_string(),
                dir,
            });
        }
        let _lease = Lease::acquire_without_recording(&dir.join("lease"))?;
        std::fs::remove_dir_all(&dir).map_err(|source| StoreError::Io { path: dir, source })
    }

    /// Whether run `id` exists.
    pub fn exists(&self, id: &str) -> bool {
        Self::is_run(&self.run_dir(id))
    }

    /// The live executor of run `id`, if any.
    pub fn holder(&self, id: &str) -> Result<Option<Holder>, StoreError> {
        Ok(Lease::holder(&self.run_dir(id).join("lease"))?)
    }

    /// The last snapshot of run `id`.
    pub fn snapshot(&self, id: &str) -> Result<Option<RunView>, StoreError> {
        read_snapshot(&self.run_dir(id))
    }

    /// Every run, by directory name (ids sort by operation then time).
    pub fn list(&self) -> Result<Vec<RunEntry>, StoreError> {
        let runs = self.runs();
        let rd = match std::fs::read_dir(&runs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Io { path: runs, source }),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| StoreError::Io {
                path: runs.clone(),
                source,
            })?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !Self::is_run(&entry.path()) {
                continue;
            }
            let holder = self.holder(&id).unwrap_or(None);
            out.push(RunEntry {
                snapshot: self.snapshot(&id),
                holder,
                id,
            });
        }
        Ok(out)
    }
}

/// An open run: its journal database, held under the run's lease.
pub struct RunStore {
    id: String,
    run_id: RunId,
    dir: PathBuf,
    db: RunDb,
    _lease: Lease,
    /// The previous holder of the lease, whose process is gone (the lease was broken).
    pub previous_holder: Option<Holder>,
    /// Records lost before this open (see [`JournalLoss`]).
    pub lost: Option<JournalLoss>,
}

impl Drop for RunStore {
    /// Closing a run makes its journal durable (an in-process "crash" in tests keeps the
    /// records written before it, like the page cache after SIGKILL).
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!("run {}: cannot flush the journal on close: {e}", self.id);
        }
    }
}

impl RunStore {
    fn open_in(id: &str, dir: &Path, executing: bool) -> Result<RunStore, StoreError> {
        let run_id = RunId::parse(id).map_err(|_| StoreError::UnknownRun {
            id: id.to_string(),
            dir: dir.to_path_buf(),
        })?;
        let lease = if executing {
            Lease::acquire(&dir.join("lease"), &me())?
        } else {
            Lease::acquire_without_recording(&dir.join("lease"))?
        };
        let previous_holder = lease
            .previous
            .clone()
            .filter(|h| h.pid != std::process::id());
        let db = RunDb::open(&dir.join("db"))?;
        if let Some(m) = &db.recovered {
            tracing::warn!("run {id}: {m}");
        }
        let lost = Self::loss(dir, &db);
        Ok(RunStore {
            id: id.to_string(),
            run_id,
            dir: dir.to_path_buf(),
            db,
            _lease: lease,
            previous_holder,
            lost,
        })
    }

    /// Records lost before this open: found earlier (the `lost` marker), the database's own
    /// finding, or a snapshot that counted more records than the journal holds (the frame log
    /// is synced before each snapshot, so its records are durable first). A new finding is
    /// written to the marker.
    fn loss(dir: &Path, db: &RunDb) -> Option<JournalLoss> {
        let marker = dir.join(LOST);
        if let Ok(detail) = std::fs::read_to_string(&marker) {
            return Some(JournalLoss {
                kept: db.len(),
                known: None,
                detail: detail.trim().to_string(),
            });
        }
        let found = Self::find_loss(dir, db)?;
        if let Err(e) = std::fs::write(&marker, format!("{found}\n")) {
            tracing::warn!("cannot write {}: {e}", marker.display());
        }
        Some(found)
    }

    fn find_loss(dir: &Path, db: &RunDb) -> Option<JournalLoss> {
        if let Some(l) = &db.lost {
            return Some(JournalLoss {
                kept: l.kept,
                known: Some(l.at_least),
                detail: l.detail.clone(),
            });
        }
        match read_snapshot(dir) {
            Ok(Some(view)) if view.events > db.len() => Some(JournalLoss {
                kept: db.len(),
                known: Some(view.events),
                detail: format!(
                    "the snapshot {} (status {}) counted {} records, the journal {} holds {}",
                    dir.join("snapshot").display(),
                    view.status,
                    view.events,
                    dir.join("db").display(),
                    db.len()
                ),
            }),
            _ => None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends one journal event (failpoints `journal.before_write` and `journal.after_write`).
    pub fn append(&mut self, ev: &Event) -> Result<u64, StoreError> {
        fail::fail_point!("journal.before_write", |_| Err(StoreError::Injected(
            "journal.before_write"
        )));
        let seq = self.db.append(EVENT_KIND, ev)?;
        fail::fail_point!("journal.after_write", |_| Err(StoreError::Injected(
            "journal.after_write"
        )));
        Ok(seq)
    }

    /// Number of events in the journal.
    pub fn len(&self) -> u64 {
        self.db.len()
    }

    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }

    /// Every event, in order.
    pub fn events(&self) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .db
            .records::<Event>(EVENT_KIND)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// Replays the journal into a run state.
    pub fn load(&self) -> Result<RunState, StoreError> {
        let events = self.events()?;
        RunState::replay(&events).map_err(|source| StoreError::Replay {
            id: self.id.clone(),
            source,
        })
    }

    /// The run's first record is durable: the run exists from now on.
    pub fn mark_created(&self) -> Result<(), StoreError> {
        let marker = self.dir.join(CREATING);
        match std::fs::remove_file(&marker) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                path: marker,
                source,
            }),
        }
    }

    /// Makes every appended event durable now.
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.db.flush()?)
    }

    /// Replaces the inspection snapshot (after making the records it counts durable).
    pub fn write_snapshot(&self, view: &RunView) -> Result<(), StoreError> {
        self.db.sync_log()?;
        Ok(vast_state::write_record_file(
            &self.dir.join("snapshot"),
            SNAPSHOT_KIND,
            view,
        )?)
    }

    /// Test support: replaces record `seq` with raw bytes.
    pub fn corrupt_record(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        Ok(self.db.overwrite_raw(seq, bytes)?)
    }
}

impl JournalStores for StateDir {
    type Store = RunStore;
    fn create(&self, id: &RunId) -> Result<RunStore, StoreFailure> {
        Ok(self.create_run(id)?)
    }
    fn open(&self, id: &RunId) -> Result<RunStore, StoreFailure> {
        Ok(self.open_run(id.as_str())?)
    }
}

impl JournalStore for RunStore {
    fn run_id(&self) -> &RunId {
        &self.run_id
    }
    fn append(&mut self, ev: &Event) -> Result<(), StoreFailure> {
        RunStore::append(self, ev)?;
        Ok(())
    }
    fn replay(&self) -> Result<Vec<Event>, StoreFailure> {
        Ok(self.events()?)
    }
    fn flush(&mut self) -> Result<(), StoreFailure> {
        Ok(RunStore::flush(self)?)
    }
    fn snapshot(&mut self, view: &RunView) -> Result<(), StoreFailure> {
        Ok(self.write_snapshot(view)?)
    }
    fn mark_created(&mut self) -> Result<(), StoreFailure> {
        Ok(RunStore::mark_created(self)?)
    }
    fn took_over_from(&self) -> Option<String> {
        self.previous_holder
            .as_ref()
            .map(|h| format!("pid {} on {}", h.pid, h.host))
    }
    fn loss(&self) -> Option<JournalLoss> {
        self.lost.clone()
    }
    fn accept_loss(&mut self) -> Result<(), StoreFailure> {
        let marker = self.dir.join(LOST);
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Box::new(StoreError::Io {
                    path: marker,
                    source,
                }))
            }
        }
        self.lost = None;
        Ok(())
    }
}
