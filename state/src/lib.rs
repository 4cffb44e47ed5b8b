//! # vast-state
//!
//! The run store: the only code in vast that touches sled and bincode.
//!
//! - [`envelope`]: every persisted value is `magic | version | kind | bincode payload`; an unknown
//!   version, a wrong kind or a corrupt payload is an [`Error`], never a panic.
//! - [`RunDb`]: one sled database per run holding an append-only, sequence-numbered record log.
//!   sled locks its directory, so one database per run means that executing one run never blocks
//!   another.
//! - [`wal`]: every record is also appended to a checksummed frame log next to the database;
//!   when sled loses records after a kill they are restored from it, and when sled reports
//!   corruption the database is moved aside and rebuilt from it.
//! - [`lease`]: an `flock`-based lease file naming its holder (pid, host); the kernel releases it
//!   when the holder dies, so a dead holder's lease is broken automatically.
//! - [`write_record_file`] / [`read_record_file`]: a single enveloped record in a file, replaced
//!   atomically (write + rename), used for the per-run snapshot read by `vast runs list|show`
//!   while another process executes the run.
//!
//! Records are the caller's serde types; they must not need `deserialize_any` (no
//! `serde_json::Value`, no untagged or internally tagged enums, no `skip_serializing_if`).

pub mod envelope;
pub mod lease;
pub mod wal;

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

pub use envelope::{decode, encode, FORMAT_VERSION};
pub use lease::{Holder, Lease, LeaseError};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the run database at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("the run database at {path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("the run database at {path} is corrupt ({detail})")]
    Corrupt { path: PathBuf, detail: String },
    #[error("I/O on the run database at {path} failed")]
    Db {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("record {key} in {path}: {source}")]
    Record {
        path: PathBuf,
        key: String,
        #[source]
        source: envelope::EnvelopeError,
    },
    #[error("cannot encode a record for {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: envelope::EnvelopeError,
    },
    #[error("I/O on {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn db_error(path: &Path, source: sled::Error) -> Error {
    match source {
        sled::Error::Corruption { .. }
        | sled::Error::Unsupported(_)
        | sled::Error::ReportableBug(_) => Error::Corrupt {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        // sled reports a held directory lock as `Io(WouldBlock)` or as
        // `Io(Other, "could not acquire lock on ...: WouldBlock")`.
        sled::Error::Io(ref io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            Error::Locked {
                path: path.to_path_buf(),
            }
        }
        other => Error::Db {
            path: path.to_path_buf(),
            source: other,
        },
    }
}

/// How often sled writes buffered records to disk in the background (group commit). A crash
/// loses at most the records of this window from sled; the frame log ([`wal`]) keeps them.
pub const GROUP_COMMIT_MS: u64 = 20;

/// One run's database: an append-only log of records keyed by a big-endian sequence number,
/// in sled, mirrored in a frame log (`<dir>.log`) from which sled is repaired or rebuilt.
pub struct RunDb {
    path: PathBuf,
    db: sled::Db,
    log: sled::Tree,
    wal: wal::Wal,
    next_seq: u64,
    /// Set when the database was rebuilt from the frame log on open.
    pub recovered: Option<String>,
    /// Set when records were lost: neither sled nor the frame log holds everything that was
    /// appended (see [`Lost`]).
    pub lost: Option<Lost>,
}

/// Records a [`RunDb`] found missing on open: the log it holds is a strict prefix of what
/// was appended (e.g. the frame log damaged in the middle while sled lost or garbled its
/// files), so the caller must not treat it as the whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// Records the database holds now (the surviving prefix).
    pub kept: u64,
    /// A lower bound of the records that existed.
    pub at_least: u64,
    /// What was found, naming the files.
    pub detail: String,
}

/// Whether `frames` appear as consecutive records of `log` between `from` and `to`.
fn sled_holds_run(log: &sled::Tree, from: u64, to: u64, frames: &[Vec<u8>]) -> bool {
    let Some(first) = frames.first() else {
        return true;
    };
    let get = |seq: u64| log.get(seq.to_be_bytes()).ok().flatten();
    (from..to).any(|start| {
        get(start).is_some_and(|v| v.as_ref() == first.as_slice())
            && frames
                .iter()
                .enumerate()
                .all(|(k, f)| get(start + k as u64).is_some_and(|v| v.as_ref() == f.as_slice()))
    })
}

/// sled 0.34 can hold its directory lock for a moment after a `Db` of the same process was
/// dropped (its flusher thread still finishing: spacejam/sled#1234): opening again right away
/// fails with [`Error::Locked`]. The run's own lease already excludes other processes, so such
/// an open is retried for up to two seconds.
fn open_sled(dir: &Path) -> Result<(sled::Db, sled::Tree, u64), Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match open_sled_once(dir) {
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn open_sled_once(dir: &Path) -> Result<(sled::Db, sled::Tree, u64), Error> {
    let opened = std::panic::catch_unwind(|| {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(2 * 1024 * 1024)
            .flush_every_ms(Some(GROUP_COMMIT_MS))
            .open()?;
        let log = db.open_tree("log")?;
        let last = log.last()?;
        Ok::<_, sled::Error>((db, log, last))
    });
    let (db, log, last) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Err(match db_error(dir, e) {
                Error::Db { path, source } => Error::Open { path, source },
                other => other,
            })
        }
        Err(_) => {
            return Err(Error::Corrupt {
                path: dir.to_path_buf(),
                detail: "sled panicked while opening".into(),
            })
        }
    };
    let next = match last {
        Some((k, _)) => seq_from_key(&k)
            .map(|s| s + 1)
            .ok_or_else(|| Error::Corrupt {
                path: dir.to_path_buf(),
                detail: format!("log key of {} bytes, expected 8", k.len()),
            })?,
        None => 0,
    };
    Ok((db, log, next))
}

impl RunDb {
    /// Opens (or creates) the database in `dir` and its frame log `<dir>.log`. Records the
    /// frame log has and sled lost are copied back; if sled reports corruption, the database
    /// is moved aside (`<dir>.corrupt-<n>`) and rebuilt from the frame log ([`RunDb::recovered`]
    /// says so). If sled comes up empty over existing files and the frame log has nothing
    /// either, the files are put back as they were and [`Error::Corrupt`] names them. Fails
    /// with [`Error::Locked`] while another process has it open.
    pub fn open(dir: &Path) -> Result<RunDb, Error> {
        let wal_path = dir.with_extension("log");
        let (wal, frames) = wal::Wal::open(&wal_path).map_err(|source| Error::Io {
            path: wal_path.clone(),
            source,
        })?;
        // sled 0.34 starts an empty database over damaged files (e.g. a configuration file of
        // ≤ 8 bytes) without an error. With frames to rebuild from that is harmless; without,
        // keep a copy of the existing files so that they can be put back untouched.
        let backup = if frames.is_empty() && has_files(dir) {
            let b = dir.with_extension("open-backup");
            let _ = std::fs::remove_dir_all(&b);
            copy_dir(dir, &b).map_err(|source| Error::Io {
                path: b.clone(),
                source,
            })?;
            Some(b)
        } else {
            None
        };
        let opened = Self::open_with(dir, wal, frames, backup.is_some());
        if let Some(b) = backup {
            match &opened {
                Ok(_) => {
                    let _ = std::fs::remove_dir_all(&b);
                }
                Err(_) => {
                    // sled was closed when `open_with` returned the error: put the original
                    // files back.
                    let _ = std::fs::remove_dir_all(dir);
                    std::fs::rename(&b, dir).map_err(|source| Error::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
            }
        }
        opened
    }

    fn open_with(
        dir: &Path,
        mut wal: wal::Wal,
        frames: Vec<Vec<u8>>,
        existed_without_frames: bool,
    ) -> Result<RunDb, Error> {
        let wal_path = wal.path().to_path_buf();
        let mut recovered = None;
        let (db, log, mut next_seq) = match open_sled(dir) {
            Ok(v) => v,
            Err(Error::Corrupt { path, detail }) if frames.is_empty() => {
                // Nothing to rebuild from: report, touch nothing.
                return Err(Error::Corrupt {
                    path,
                    detail: format!(
                        "{detail}; and its frame log {} has no valid records",
                        wal_path.display()
                    ),
                });
            }
            Err(Error::Corrupt { detail, .. }) => {
                let mut n = 0;
                let aside = loop {
                    let p = dir.with_extension(format!("corrupt-{n}"));
                    if !p.exists() {
                        break p;
                    }
                    n += 1;
                };
                std::fs::rename(dir, &aside).map_err(|source| Error::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
                recovered = Some(format!(
                    "sled reported corruption ({detail}); moved it to {} and rebuilt {} records from {}",
                    aside.display(),
                    frames.len(),
                    wal_path.display()
                ));
                let v = open_sled(dir)?;
                if v.2 != 0 {
                    return Err(Error::Corrupt {
                        path: dir.to_path_buf(),
                        detail: "rebuilt database is not empty".into(),
                    });
                }
                v
            }
            Err(e) => return Err(e),
        };
        if existed_without_frames && next_seq == 0 {
            drop(log);
            drop(db);
            return Err(Error::Corrupt {
                path: dir.to_path_buf(),
                detail: format!(
                    "no records readable from its files, and its frame log {} has no valid records",
                    wal_path.display()
                ),
            });
        }
        let have = frames.len() as u64;
        let lost = wal.damage.as_ref().and_then(|d| {
            // The frame log lost records in its middle; sled covers them only if the frames
            // found after the damage are consecutive records of sled after the log's valid
            // prefix (a second damaged region, or a log tail lost to power loss that sled
            // has, still counts as covered).
            let kept = have.max(if recovered.is_none() { next_seq } else { 0 });
            let at_least = have + 1 + d.frames_after.len() as u64;
            let covered = recovered.is_none()
                && next_seq > have
                && sled_holds_run(&log, have, next_seq, &d.frames_after);
            (!covered && kept < at_least).then(|| Lost {
                kept,
                at_least,
                detail: format!(
                    "the frame log {} is damaged at byte {} with {} valid records after the damage, and the database {} does not hold them",
                    wal_path.display(),
                    d.at,
                    d.frames_after.len(),
                    dir.display()
                ),
            })
        });
        if next_seq < have {
            // sled lost its last records (or was rebuilt): restore them from the frame log.
            for (seq, frame) in frames.iter().enumerate().skip(next_seq as usize) {
                log.insert((seq as u64).to_be_bytes(), frame.as_slice())
                    .map_err(|e| db_error(dir, e))?;
            }
            next_seq = have;
            db.flush().map_err(|e| db_error(dir, e))?;
        } else if next_seq > have {
            // The frame log lost a torn tail that sled has: restore the frame log.
            for seq in have..next_seq {
                let v = log
                    .get(seq.to_be_bytes())
                    .map_err(|e| db_error(dir, e))?
                    .ok_or_else(|| Error::Corrupt {
                        path: dir.to_path_buf(),
                        detail: format!("log #{seq} missing"),
                    })?;
                wal.append(&v).map_err(|source| Error::Io {
                    path: wal_path.clone(),
                    source,
                })?;
            }
        }
        Ok(RunDb {
            path: dir.to_path_buf(),
            db,
            log,
            wal,
            next_seq,
            recovered,
            lost,
        })
    }

    /// The directory of this database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` (enveloped with `kind`) and returns its sequence number. It is written
    /// to the frame log at once (survives a kill) and to sled, durable there after the next
    /// group commit or [`RunDb::flush`].
    pub fn append<T: Serialize>(&mut self, kind: u8, record: &T) -> Result<u64, Error> {
        let bytes = encode(kind, record).map_err(|source| Error::Encode {
            path: self.path.clone(),
            source,
        })?;
        let seq = self.next_seq;
        self.wal.append(&bytes).map_err(|source| Error::Io {
            path: self.wal.path().to_path_buf(),
            source,
        })?;
        self.log
            .insert(seq.to_be_bytes(), bytes)
            .map_err(|e| db_error(&self.path, e))?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Every record of the log in order, decoded as `T` of `kind`. Should sled report
    /// corruption while reading, the records are read from the frame log instead.
    pub fn records<T: DeserializeOwned>(&self, kind: u8) -> Result<Vec<(u64, T)>, Error> {
        match self.records_from_sled(kind) {
            Err(Error::Corrupt { .. }) => self.records_from_wal(kind),
            other => other,
        }
    }

    fn records_from_sled<T: DeserializeOwned>(&self, kind: u8) -> Result<Vec<(u64, T)>, Error> {
        let mut out = Vec::with_capacity(self.next_seq as usize);
        for item in self.log.iter() {
            let (k, v) = item.map_err(|e| db_error(&self.path, e))?;
            let seq = seq_from_key(&k).ok_or_else(|| Error::Corrupt {
                path: self.path.clone(),
                detail: format!("log key of {} bytes, expected 8", k.len()),
            })?;
            if seq != out.len() as u64 {
                return Err(Error::Corrupt {
                    path: self.path.clone(),
                    detail: format!("log #{} missing", out.len()),
                });
            }
            let rec = decode(kind, &v).map_err(|source| Error::Record {
                path: self.path.clone(),
                key: format!("log #{seq}"),
                source,
            })?;
            out.push((seq, rec));
        }
        Ok(out)
    }

    fn records_from_wal<T: DeserializeOwned>(&self, kind: u8) -> Result<Vec<(u64, T)>, Error> {
        let path = self.wal.path().to_path_buf();
        let frames = wal::read_frames(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        frames
            .iter()
            .enumerate()
            .map(|(seq, f)| {
                decode(kind, f)
                    .map(|r| (seq as u64, r))
                    .map_err(|source| Error::Record {
                        path: path.clone(),
                        key: format!("frame #{seq}"),
                        source,
                    })
            })
            .collect()
    }

    /// Number of records in the log.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// Makes the frame log durable (fdatasync): every record appended so far survives power
    /// loss. Called before a snapshot that counts them is written.
    pub fn sync_log(&self) -> Result<(), Error> {
        self.wal.sync().map_err(|source| Error::Io {
            path: self.wal.path().to_path_buf(),
            source,
        })
    }

    /// Writes every buffered record to disk now (sled flush and frame-log fsync).
    pub fn flush(&self) -> Result<(), Error> {
        self.wal.sync().map_err(|source| Error::Io {
            path: self.wal.path().to_path_buf(),
            source,
        })?;
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| db_error(&self.path, e))
    }

    /// Test support: overwrites the raw bytes of record `seq` in sled (to check corruption
    /// handling; the frame log is left alone).
    pub fn overwrite_raw(&self, seq: u64, bytes: &[u8]) -> Result<(), Error> {
        self.log
            .insert(seq.to_be_bytes(), bytes)
            .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }
}

/// Whether `dir` holds any file (at any depth).
fn has_files(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_files(&p)
        } else {
            true
        }
    })
}

/// Copies the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

fn seq_from_key(k: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = k.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

/// Writes one enveloped record to `path` atomically (temporary file + rename), so a reader
/// sees either the old or the new record.
pub fn write_record_file<T: Serialize>(path: &Path, kind: u8, record: &T) -> Result<(), Error> {
    let bytes = encode(kind, record).map_err(|source| Error::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a record written by [`write_record_file`]; `Ok(None)` when the file does not exist.
pub fn read_record_file<T: DeserializeOwned>(path: &Path, kind: u8) -> Result<Option<T>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    decode(kind, &bytes)
        .map(Some)
        .map_err(|source| Error::Record {
            path: path.to_path_buf(),
            key: "file".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        n: u32,
        s: String,
    }

    #[test]
    fn log_survives_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut db = RunDb::open(dir.path()).expect("open");
            for n in 0..100 {
                db.append(
                    7,
                    &Rec {
                        n,
                        s: format!("r{n}"),
                    },
                )
                .expect("append");
            }
            db.flush().expect("flush");
        }
        let mut db = RunDb::open(dir.path()).expect("reopen");
        assert_eq!(db.len(), 100);
        let recs: Vec<(u64, Rec)> = db.records(7).expect("records");
        assert_eq!(recs.len(), 100);
        assert!(recs
            .iter()
            .enumerate()
            .all(|(i, (s, r))| *s == i as u64 && r.n == i as u32));
        assert_eq!(
            db.append(
                7,
                &Rec {
                    n: 100,
                    s: String::new()
                }
            )
            .expect("append"),
            100
        );
    }

    #[test]
    fn corrupt_record_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = RunDb::open(dir.path()).expect("open");
        db.append(
            7,
            &Rec {
                n: 1,
                s: "a".into(),
            },
        )
        .expect("append");
        db.overwrite_raw(0, b"garbage").expect("overwrite");
        let err = db.records::<Rec>(7).expect_err("corrupt");
        assert!(err.to_string().contains("log #0"), "{err}");
    }

    #[test]
    fn a_frame_log_damaged_in_the_middle_is_a_loss_unless_sled_covers_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("db");
        let write = || {
            let _ = std::fs::remove_dir_all(&p);
            let _ = std::fs::remove_file(p.with_extension("log"));
            let mut db = RunDb::open(&p).expect("open");
            for n in 0..40 {
                db.append(
                    7,
                    &Rec {
                        n,
                        s: "y".repeat(10),
                    },
                )
                .expect("append");
            }
            db.flush().expect("flush");
        };
        let garble_log = || {
            let log = p.with_extension("log");
            let mut bytes = std::fs::read(&log).expect("log");
            let mid = bytes.len() / 2;
            bytes[mid..mid + 8].iter_mut().for_each(|b| *b ^= 0x3c);
            std::fs::write(&log, bytes).expect("write");
        };
        // sled intact: it covers the damaged records; nothing is lost and the log is repaired.
        write();
        garble_log();
        {
            let mut db = RunDb::open(&p).expect("open");
            assert_eq!(db.lost, None);
            assert_eq!(db.len(), 40);
            db.append(
                7,
                &Rec {
                    n: 40,
                    s: String::new(),
                },
            )
            .expect("append");
        }
        let (_, frames) = wal::Wal::open(&p.with_extension("log")).expect("log");
        assert_eq!(frames.len(), 41, "the frame log was restored from sled");
        // sled destroyed too: only the prefix survives, and that is reported.
        write();
        garble_log();
        for entry in std::fs::read_dir(&p).expect("dir") {
            let f = entry.expect("entry").path();
            if f.is_file() {
                std::fs::write(&f, b"\xff\xfe garbage \x00\x01").expect("wreck");
            }
        }
        for _ in 0..2 {
            let db = RunDb::open(&p).expect("open");
            let lost = db.lost.clone().expect("a loss");
            assert!(lost.kept < 40 && lost.at_least > lost.kept, "{lost:?}");
            assert_eq!(db.len(), lost.kept);
            assert!(lost.detail.contains("db.log"), "{}", lost.detail);
        }
    }

    #[test]
    fn destroyed_sled_database_is_rebuilt_from_the_frame_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("db");
        {
            let mut db = RunDb::open(&p).expect("open");
            for n in 0..50 {
                db.append(
                    7,
                    &Rec {
                        n,
                        s: "x".repeat(n as usize),
                    },
                )
                .expect("append");
            }
            db.flush().expect("flush");
        }
        // Wreck sled's files.
        for entry in std::fs::read_dir(&p).expect("dir") {
            let f = entry.expect("entry").path();
            if f.is_file() {
                std::fs::write(&f, b"\xff\xfe garbage \x00\x01").expect("wreck");
            }
        }
        let db = RunDb::open(&p).expect("recovered open");
        assert!(
            db.recovered
                .as_deref()
                .is_some_and(|m| m.contains("rebuilt 50 records")),
            "{:?}",
            db.recovered
        );
        let recs: Vec<(u64, Rec)> = db.records(7).expect("records");
        assert_eq!(recs.len(), 50);
        assert_eq!(
            recs[49].1,
            Rec {
                n: 49,
                s: "x".repeat(49)
            }
        );
    }

    fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).expect("read")));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_database_sled_would_silently_reset_is_reported_and_left_untouched() {
        // sled 0.34 treats a configuration file of ≤ 8 bytes as absent and starts an empty
        // database over the old files; with no frame log to rebuild from, that must be a
        // corruption error that changes nothing.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("db");
        {
            let mut db = RunDb::open(&p).expect("open");
            for n in 0..5 {
                db.append(
                    7,
                    &Rec {
                        n,
                        s: String::new(),
                    },
                )
                .expect("append");
            }
            db.flush().expect("flush");
        }
        for (f, _) in files_under(&p) {
            std::fs::write(&f, b"garbage").expect("wreck");
        }
        std::fs::write(p.with_extension("log"), b"garbage").expect("wreck log");
        let before = files_under(dir.path());
        let err = RunDb::open(&p).err().expect("corrupt");
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Corrupt { .. }) && msg.contains(&p.display().to_string()),
            "{msg}"
        );
        assert_eq!(files_under(dir.path()), before, "nothing touched");
    }

    #[test]
    fn a_lost_frame_log_is_restored_from_sled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("db");
        {
            let mut db = RunDb::open(&p).expect("open");
            for n in 0..3 {
                db.append(
                    7,
                    &Rec {
                        n,
                        s: String::new(),
                    },
                )
                .expect("append");
            }
            db.flush().expect("flush");
        }
        std::fs::write(p.with_extension("log"), b"").expect("lose the log");
        let db = RunDb::open(&p).expect("open");
        assert_eq!(db.len(), 3);
        drop(db);
        let frames = wal::read_frames(&p.with_extension("log")).expect("frames");
        assert_eq!(frames.len(), 3, "frame log rebuilt from sled");
        assert!(
            !dir.path().read_dir().expect("dir").any(|e| e
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .contains("backup")),
            "no backup left behind"
        );
    }

    #[test]
    fn records_lost_by_sled_are_restored_from_the_frame_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("db");
        {
            let mut db = RunDb::open(&p).expect("open");
            db.append(
                7,
                &Rec {
                    n: 0,
                    s: String::new(),
                },
            )
            .expect("append");
            db.flush().expect("flush");
        }
        // Simulate sled losing un-flushed records: append the frames only.
        {
            let (mut w, frames) = wal::Wal::open(&p.with_extension("log")).expect("wal");
            assert_eq!(frames.len(), 1);
            for n in 1..4 {
                w.append(
                    &encode(
                        7,
                        &Rec {
                            n,
                            s: String::new(),
                        },
                    )
                    .expect("encode"),
                )
                .expect("append");
            }
        }
        let db = RunDb::open(&p).expect("open");
        assert_eq!(db.len(), 4);
        assert!(db.recovered.is_none());
        let recs: Vec<(u64, Rec)> = db.records(7).expect("records");
        assert_eq!(
            recs.iter().map(|(_, r)| r.n).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn record_file_roundtrip_and_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("snap");
        assert!(read_record_file::<Rec>(&p, 3).expect("read").is_none());
        write_record_file(
            &p,
            3,
            &Rec {
                n: 5,
                s: "x".into(),
            },
        )
        .expect("write");
        let r: Rec = read_record_file(&p, 3).expect("read").expect("present");
        assert_eq!(
            r,
            Rec {
                n: 5,
                s: "x".into()
            }
        );
        assert!(read_record_file::<Rec>(&p, 4).is_err());
    }
}
