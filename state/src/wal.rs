//! The redundant append-only frame log written next to each sled database
//! (`<dir>.log`): every record is written here first, as `len u32 | fnv64 u64 | bytes`, with
//! one `write` call, so it survives the process being killed at any moment. sled 0.34 can
//! report corruption after a kill; the database is then rebuilt from this log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 12;

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An open frame log.
pub struct Wal {
    path: PathBuf,
    file: File,
    /// Length of the valid prefix when a torn or corrupt tail must be cut before appending.
    cut_to: Option<u64>,
}

/// Reads every valid frame of the log at `path` without modifying it.
pub fn read_frames(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path)?;
    Ok(parse(&bytes).0)
}

/// The valid frames of `bytes` and the length of the valid prefix.
fn parse(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[at + 4..at + HEADER]);
        let end = at + HEADER + len;
        if end > bytes.len() || fnv64(&bytes[at + HEADER..end]) != u64::from_le_bytes(sum) {
            break;
        }
        frames.push(bytes[at + HEADER..end].to_vec());
        at = end;
    }
    (frames, at)
}

impl Wal {
    /// Opens (or creates) the log at `path`, returns it with every valid frame. A torn or
    /// corrupt tail (from a crash mid-write) is cut off before the first append, so merely
    /// opening a damaged log never changes it.
    pub fn open(path: &Path) -> std::io::Result<(Wal, Vec<Vec<u8>>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (frames, at) = parse(&bytes);
        let cut_to = (at < bytes.len()).then_some(at as u64);
        Ok((
            Wal {
                path: path.to_path_buf(),
                file,
                cut_to,
            },
            frames,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one frame with a single `write` call.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if let Some(len) = self.cut_to.take() {
            self.file.set_len(len)?;
        }
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&fnv64(payload).to_le_bytes());
        buf.extend_from_slice(payload);
        self.file.write_all(&buf)
    }

    /// Makes the log durable on disk (power loss), not only in the page cache.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.log");
        {
            let (mut w, frames) = Wal::open(&p).expect("open");
            assert!(frames.is_empty());
            for i in 0..10u8 {
                w.append(&vec![i; i as usize * 3]).expect("append");
            }
        }
        let full = std::fs::metadata(&p).expect("meta").len();
        // Tear the last frame and flip a byte in the 9th.
        let mut bytes = std::fs::read(&p).expect("read");
        bytes.truncate(full as usize - 2);
        std::fs::write(&p, &bytes).expect("write");
        let (_, frames) = Wal::open(&p).expect("reopen");
        assert_eq!(frames.len(), 9);
        assert_eq!(frames[8], vec![8u8; 24]);
        assert_eq!(
            std::fs::read(&p).expect("read"),
            bytes,
            "opening does not change the log"
        );
        let (mut w, frames) = Wal::open(&p).expect("reopen");
        assert_eq!(frames.len(), 9);
        w.append(b"next").expect("append");
        let (_, frames) = Wal::open(&p).expect("reopen");
        assert_eq!(frames.last().map(Vec::as_slice), Some(&b"next"[..]));
    }
}
