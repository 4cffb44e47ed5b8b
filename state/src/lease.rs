//! The per-run lease: an exclusive `flock` on a small file naming its holder.
//!
//! The kernel drops an `flock` when its holder dies (including SIGKILL), so a dead holder's
//! lease is broken automatically by the next acquirer, which logs the previous holder; a live
//! holder makes [`Lease::acquire`] fail with [`LeaseError::Held`] naming its pid and host.
//! Local file systems only (flock over NFS is not reliable).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Who holds (or held) a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// When the holder acquired the lease (RFC 3339 text, as given by the caller).
    pub since: String,
}

impl Holder {
    fn render(&self) -> String {
        format!(
            "pid={}\nhost={}\nsince={}\n",
            self.pid, self.host, self.since
        )
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut pid = None;
        let mut host = String::new();
        let mut since = String::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("pid=") {
                pid = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("host=") {
                host = v.to_string();
            } else if let Some(v) = line.strip_prefix("since=") {
                since = v.to_string();
            }
        }
        Some(Holder {
            pid: pid?,
            host,
            since,
        })
    }
}

/// Lease errors.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("run is being executed by pid {} on {} (since {})", .0.pid, .0.host, .0.since)]
    Held(Holder),
    #[error("run is being executed by another process (lease file {0} is locked)")]
    HeldUnknown(PathBuf),
    #[error("cannot use the lease file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lease; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lease {
    _file: File,
    /// The holder recorded in the file before we took it, if its process is gone.
    pub previous: Option<Holder>,
}

fn io(path: &Path, source: std::io::Error) -> LeaseError {
    LeaseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a valid, open file descriptor owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(err)
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    Holder::parse(&text)
}

/// How long an executor waits for an inspecting process to release the lease.
pub const INSPECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `h` names a live process on this host (a holder on another host counts as live).
fn alive(h: &Holder) -> bool {
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !h.host.is_empty() && h.host != here {
        return true;
    }
    let Ok(pid) = i32::try_from(h.pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Opens and locks the lease file; fails at once while a live recorded holder has it, waits
/// up to [`INSPECTION_WAIT`] while someone else (an inspection) holds it briefly.
fn lock_waiting(path: &Path) -> Result<File, LeaseError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io(path, e))?;
    let start = std::time::Instant::now();
    loop {
        if try_lock(&file).map_err(|e| io(path, e))? {
            return Ok(file);
        }
        let holder = read_holder(&mut file);
        let live_executor = holder
            .as_ref()
            .is_some_and(|h| h.pid != std::process::id() && alive(h));
        if live_executor || start.elapsed() >= INSPECTION_WAIT {
            return Err(match holder {
                Some(h) => LeaseError::Held(h),
                None => LeaseError::HeldUnknown(path.to_path_buf()),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Lease {
    /// Takes the lease at `path` for `me`, breaking a dead holder's lease. While the lock is
    /// held by a process other than the recorded (live) holder, i.e. briefly by an inspecting
    /// `vast runs show`, it waits up to [`INSPECTION_WAIT`] for it.
    pub fn acquire(path: &Path, me: &Holder) -> Result<Lease, LeaseError> {
        let mut file = lock_waiting(path)?;
        let previous = read_holder(&mut file);
        file.set_len(0).map_err(|e| io(path, e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| io(path, e))?;
        file.write_all(me.render().as_bytes())
            .map_err(|e| io(path, e))?;
        Ok(Lease {
            _file: file,
            previous,
        })
    }

    /// Takes the lease at `path` without replacing the recorded holder (for short inspection,
    /// so the last executor stays visible to the next one).
    pub fn acquire_without_recording(path: &Path) -> Result<Lease, LeaseError> {
        Ok(Lease {
            _file: lock_waiting(path)?,
            previous: None,
        })
    }

    /// The live holder of the lease at `path`, if any (does not take the lease).
    pub fn holder(path: &Path) -> Result<Option<Holder>, LeaseError> {
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path, e)),
        };
        if try_lock(&file).map_err(|e| io(path, e))? {
            // Free: our lock is released when `file` is dropped.
            return Ok(None);
        }
        Ok(Some(read_holder(&mut file).unwrap_or(Holder {
            pid: 0,
            host: "unknown".into(),
            since: String::new(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(pid: u32) -> Holder {
        Holder {
            pid,
            host: "h".into(),
            since: "t".into(),
        }
    }

    #[test]
    fn live_holder_blocks_and_release_frees() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("lease");
        let l = Lease::acquire(&p, &me(11)).expect("first");
        assert_eq!(Lease::holder(&p).expect("holder"), Some(me(11)));
        match Lease::acquire(&p, &me(12)) {
            Err(LeaseError::Held(h)) => assert_eq!(h.pid, 11),
            other => panic!("expected Held, got {other:?}"),
        }
        let msg = Lease::acquire(&p, &me(12)).expect_err("held").to_string();
        assert!(msg.contains("being executed by pid 11"), "{msg}");
        drop(l);
        assert_eq!(Lease::holder(&p).expect("holder"), None);
        let l2 = Lease::acquire(&p, &me(12)).expect("after release");
        assert_eq!(l2.previous, Some(me(11)));
    }
}
