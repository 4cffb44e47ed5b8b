//! # vast-state
//!
//! The run store: the only code in vast that touches sled and bincode.
//!
//! - [`envelope`]: every persisted value is `magic | version | kind | bincode payload`; an unknown
//!   version, a wrong kind or a corrupt payload is an [`Error`], never a panic.
//! - [`RunDb`]: one sled database per run holding an append-only, sequence-numbered record log.
//!   sled locks its directory, so one database per run means that executing one run never blocks
//!   another.
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
    #[error("the run database at {path} is corrupt (sled reports: {detail})")]
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
        sled::Error::Corruption { .. } => Error::Corrupt {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => Error::Locked {
            path: path.to_path_buf(),
        },
        other => Error::Db {
            path: path.to_path_buf(),
            source: other,
        },
    }
}

/// How often sled writes buffered records to disk in the background (group commit). A crash
/// loses at most the records of this window; the engine's steps are idempotent, so a lost record
/// costs a re-run, never a wrong result.
pub const GROUP_COMMIT_MS: u64 = 20;

/// One run's database: an append-only log of records keyed by a big-endian sequence number.
pub struct RunDb {
    path: PathBuf,
    db: sled::Db,
    log: sled::Tree,
    next_seq: u64,
}

impl RunDb {
    /// Opens (or creates) the database in `dir`. Fails with [`Error::Locked`] while another
    /// process has it open and with [`Error::Corrupt`] when sled finds damage.
    pub fn open(dir: &Path) -> Result<RunDb, Error> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(2 * 1024 * 1024)
            .flush_every_ms(Some(GROUP_COMMIT_MS))
            .open()
            .map_err(|e| match db_error(dir, e) {
                Error::Db { path, source } => Error::Open { path, source },
                other => other,
            })?;
        let log = db.open_tree("log").map_err(|e| db_error(dir, e))?;
        let next_seq = match log.last().map_err(|e| db_error(dir, e))? {
            Some((k, _)) => seq_from_key(&k)
                .map(|s| s + 1)
                .ok_or_else(|| Error::Corrupt {
                    path: dir.to_path_buf(),
                    detail: format!("log key of {} bytes, expected 8", k.len()),
                })?,
            None => 0,
        };
        Ok(RunDb {
            path: dir.to_path_buf(),
            db,
            log,
            next_seq,
        })
    }

    /// The directory of this database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` (enveloped with `kind`) and returns its sequence number. The record is
    /// durable after the next group commit or [`RunDb::flush`].
    pub fn append<T: Serialize>(&mut self, kind: u8, record: &T) -> Result<u64, Error> {
        let bytes = encode(kind, record).map_err(|source| Error::Encode {
            path: self.path.clone(),
            source,
        })?;
        let seq = self.next_seq;
        self.log
            .insert(seq.to_be_bytes(), bytes)
            .map_err(|e| db_error(&self.path, e))?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Every record of the log in order, decoded as `T` of `kind`.
    pub fn records<T: DeserializeOwned>(&self, kind: u8) -> Result<Vec<(u64, T)>, Error> {
        let mut out = Vec::with_capacity(self.next_seq as usize);
        for item in self.log.iter() {
            let (k, v) = item.map_err(|e| db_error(&self.path, e))?;
            let seq = seq_from_key(&k).ok_or_else(|| Error::Corrupt {
                path: self.path.clone(),
                detail: format!("log key of {} bytes, expected 8", k.len()),
            })?;
            let rec = decode(kind, &v).map_err(|source| Error::Record {
                path: self.path.clone(),
                key: format!("log #{seq}"),
                source,
            })?;
            out.push((seq, rec));
        }
        Ok(out)
    }

    /// Number of records in the log.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// Writes every buffered record to disk now.
    pub fn flush(&self) -> Result<(), Error> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| db_error(&self.path, e))
    }

    /// Test support: overwrites the raw bytes of record `seq` (to check corruption handling).
    pub fn overwrite_raw(&self, seq: u64, bytes: &[u8]) -> Result<(), Error> {
        self.log
            .insert(seq.to_be_bytes(), bytes)
            .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }
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
