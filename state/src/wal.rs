//! The redundant append-only frame log written next to each sled database
//! (`<dir>.log`): every record is written here first, as `len u32 | fnv64 u64 | bytes`, with
//! one `write` call, so it survives the process being killed at any moment. sled 0.34 can
//! report corruption after a kill; the database is then rebuilt from this log.
//!
//! A crash mid-write leaves a *torn tail*: the valid frames, then part of one frame. Damage in
//! the middle (a garbled sector, a bad copy) leaves valid frames *after* the bad bytes; opening
//! looks for them ([`Damage`]) so that a log that lost records in the middle is never taken for
//! one with a torn tail (which would silently drop every record after the damage).

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

/// Damage in the middle of a frame log: valid frames follow bytes that are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first byte that is not a valid frame.
    pub at: u64,
    /// Valid frames found after the damaged bytes (their sequence numbers are unknown).
    pub frames_after: Vec<Vec<u8>>,
}

/// The largest frame a resync scan considers (records are far smaller).
const MAX_SCAN_FRAME: usize = 64 * 1024 * 1024;

/// The valid frame starting at `at` in `bytes`, if any: its payload range.
fn frame_at(bytes: &[u8], at: usize) -> Option<std::ops::Range<usize>> {
    if at + HEADER > bytes.len() {
        return None;
    }
    let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
    let end = at + HEADER + len;
    if len == 0 || len > MAX_SCAN_FRAME || end > bytes.len() {
        return None;
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[at + 4..at + HEADER]);
    (fnv64(&bytes[at + HEADER..end]) == u64::from_le_bytes(sum)).then_some(at + HEADER..end)
}

/// Looks for valid frames after the invalid bytes at `from`: none means a torn tail.
fn damage_after(bytes: &[u8], from: usize) -> Option<Damage> {
    let mut at = from + 1;
    while at + HEADER <= bytes.len() {
        if frame_at(bytes, at).is_some() {
            let mut frames_after = Vec::new();
            while let Some(r) = frame_at(bytes, at) {
                at = r.end;
                frames_after.push(bytes[r].to_vec());
            }
            return Some(Damage {
                at: from as u64,
                frames_after,
            });
        }
        at += 1;
    }
    None
}

/// An open frame log.
pub struct Wal {
    path: PathBuf,
    file: File,
    /// Length of the valid prefix when a torn or corrupt tail must be cut before appending.
    cut_to: Option<u64>,
    /// Damage found in the middle when the log was opened.
    pub damage: Option<Damage>,
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
        let damage = cut_to.and_then(|_| damage_after(&bytes, at));
        Ok((
            Wal {
                path: path.to_path_buf(),
                file,
                cut_to,
                damage,
            },
            frames,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one frame with a single `write` call. The first append after opening a log
    /// with a torn tail cuts it; one with [`Damage`] is first copied to `<log>.damaged-<n>`,
    /// so the evidence is kept.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if let Some(len) = self.cut_to {
            if self.damage.is_some() {
                let mut n = 0;
                let aside = loop {
                    let p = self.path.with_extension(format!("log.damaged-{n}"));
                    if !p.exists() {
                        break p;
                    }
                    n += 1;
                };
                std::fs::copy(&self.path, &aside)?;
                File::open(&aside)?.sync_all()?;
                self.damage = None;
            }
            self.file.set_len(len)?;
            self.cut_to = None;
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
        assert_eq!(w.damage, None, "a torn tail is not damage");
        w.append(b"next").expect("append");
        let (_, frames) = Wal::open(&p).expect("reopen");
        assert_eq!(frames.last().map(Vec::as_slice), Some(&b"next"[..]));
    }
}

#[cfg(test)]
mod damage_tests {
    use super::*;

    fn log_of(n: u8) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.log");
        let (mut w, _) = Wal::open(&p).expect("open");
        for i in 0..n {
            w.append(&[i; 40]).expect("append");
        }
        (dir, p)
    }

    #[test]
    fn garbage_in_the_middle_is_damage_with_the_frames_after_it() {
        let (_d, p) = log_of(10);
        let mut bytes = std::fs::read(&p).expect("read");
        // Frame 4 starts at 4 * 52; garble its payload.
        for b in &mut bytes[4 * 52 + 20..4 * 52 + 30] {
            *b ^= 0x5a;
        }
        std::fs::write(&p, &bytes).expect("write");
        let (mut w, frames) = Wal::open(&p).expect("open");
        assert_eq!(frames.len(), 4);
        let d = w.damage.clone().expect("damage found");
        assert_eq!(d.at, 4 * 52);
        assert_eq!(d.frames_after.len(), 5, "frames 5..10 are still there");
        assert_eq!(d.frames_after[0], vec![5u8; 40]);
        // Appending keeps a copy of the damaged log.
        w.append(b"x").expect("append");
        assert_eq!(
            std::fs::read(p.with_extension("log.damaged-0")).expect("copy"),
            bytes
        );
    }

    #[test]
    fn a_garbled_length_in_the_middle_is_damage_too() {
        let (_d, p) = log_of(10);
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[2 * 52..2 * 52 + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&p, &bytes).expect("write");
        let (w, frames) = Wal::open(&p).expect("open");
        assert_eq!(frames.len(), 2);
        assert_eq!(w.damage.expect("damage").frames_after.len(), 7);
    }

    #[test]
    fn a_torn_tail_of_any_length_is_not_damage() {
        let (_d, p) = log_of(6);
        let full = std::fs::read(&p).expect("read");
        for cut in 1..52 {
            std::fs::write(&p, &full[..full.len() - cut]).expect("write");
            let (w, frames) = Wal::open(&p).expect("open");
            assert_eq!(frames.len(), 5, "cut {cut}");
            assert_eq!(w.damage, None, "cut {cut}");
        }
    }
}
