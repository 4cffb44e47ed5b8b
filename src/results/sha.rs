//! SHA-256 whose running state can be serialized mid-stream, so that a resumed
//! download continues hashing from its journal instead of re-reading the file.
//!
//! It is `sha2::Sha256` taken apart: the same compression function
//! (`sha2::compress256`, which needs sha2's `compress` feature, so the same
//! SHA-NI/AVX backends) and the same block buffer, but with the chaining value
//! in a field of ours that serde can write out.

use serde::{Deserialize, Serialize};
use sha2::digest::block_buffer::{BlockBuffer, Eager};
use sha2::digest::typenum::U64;

const BLOCK: u64 = 64;

/// Initial hash value H(0) (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A streaming SHA-256 that can be persisted with serde and resumed.
///
/// Serialized as `{"h": "<64 hex>", "len": <bytes fed>, "buf": "<hex of the len % 64 pending bytes>"}`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "Wire", into = "Wire")]
pub struct Sha256State {
    /// Chaining value after all complete blocks.
    h: [u32; 8],
    /// Bytes fed so far.
    len: u64,
    /// The `len % 64` pending bytes of the incomplete block. This is the block
    /// buffer `sha2::Sha256` itself uses: whole blocks of the input are handed to
    /// `compress256` in one call straight from the caller's slice, no copy.
    buf: BlockBuffer<U64, Eager>,
}

impl Sha256State {
    /// A fresh state (hash of the empty message so far).
    pub fn new() -> Self {
        Sha256State {
            h: H0,
            len: 0,
            buf: BlockBuffer::default(),
        }
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        let h = &mut self.h;
        self.buf
            .digest_blocks(data, |blocks| sha2::compress256(h, blocks));
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// The digest of everything fed so far (standard padding); the state is
    /// left untouched, so feeding may continue.
    pub fn finish(&self) -> [u8; 32] {
        let mut h = self.h;
        let mut buf = self.buf.clone();
        buf.len64_padding_be(self.len.wrapping_mul(8), |block| {
            sha2::compress256(&mut h, std::slice::from_ref(block))
        });
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// Lowercase hex of [`finish`](Self::finish).
    pub fn hex(&self) -> String {
        hex::encode(self.finish())
    }
}

impl Default for Sha256State {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Sha256State {
    fn eq(&self, other: &Self) -> bool {
        self.h == other.h && self.len == other.len && self.buf.get_data() == other.buf.get_data()
    }
}

impl Eq for Sha256State {}

impl std::fmt::Debug for Sha256State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wire = Wire::from(self.clone());
        f.debug_struct("Sha256State")
            .field("h", &wire.h)
            .field("len", &wire.len)
            .field("buf", &wire.buf)
            .finish()
    }
}

/// The serialized form.
#[derive(Serialize, Deserialize)]
struct Wire {
    h: String,
    len: u64,
    buf: String,
}

impl From<Sha256State> for Wire {
    fn from(s: Sha256State) -> Self {
        let mut h = [0u8; 32];
        for (chunk, word) in h.chunks_exact_mut(4).zip(s.h) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        Wire {
            h: hex::encode(h),
            len: s.len,
            buf: hex::encode(s.buf.get_data()),
        }
    }
}

impl TryFrom<Wire> for Sha256State {
    type Error = String;

    fn try_from(w: Wire) -> Result<Self, String> {
        let mut hb = [0u8; 32];
        hex::decode_to_slice(&w.h, &mut hb)
            .map_err(|e| format!("sha256 state: bad 'h' (want 64 hex digits): {e}"))?;
        let mut h = [0u32; 8];
        for (word, chunk) in h.iter_mut().zip(hb.chunks_exact(4)) {
            *word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        let pending = hex::decode(&w.buf).map_err(|e| format!("sha256 state: bad 'buf': {e}"))?;
        if pending.len() as u64 != w.len % BLOCK {
            return Err(format!(
                "sha256 state: 'buf' holds {} bytes but len {} implies {}",
                pending.len(),
                w.len,
                w.len % BLOCK
            ));
        }
        let buf = BlockBuffer::try_new(&pending)
            .map_err(|_| "sha256 state: 'buf' is not shorter than a block".to_string())?;
        Ok(Sha256State { h, len: w.len, buf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Deterministic pseudo-random bytes (xorshift64*).
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut next = rng(seed);
        (0..len).map(|_| next() as u8).collect()
    }

    fn reference(d: &[u8]) -> [u8; 32] {
        Sha256::digest(d).into()
    }

    const LENGTHS: [usize; 11] = [0, 1, 55, 56, 57, 63, 64, 65, 127, 1000, (1 << 20) + 3];

    #[test]
    fn known_vectors() {
        assert_eq!(
            Sha256State::new().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut s = Sha256State::default();
        s.update(b"abc");
        assert_eq!(
            s.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut s = Sha256State::new();
        s.update(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
        assert_eq!(
            s.hex(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn one_shot_matches_sha2() {
        for len in LENGTHS {
            let d = data(len, len as u64 + 7);
            let mut s = Sha256State::new();
            s.update(&d);
            assert_eq!(s.finish(), reference(&d), "len {len}");
            assert_eq!(s.bytes(), len as u64);
        }
    }

    #[test]
    fn random_splits_match_sha2() {
        let mut next = rng(42);
        for len in LENGTHS {
            let d = data(len, len as u64);
            let want = reference(&d);
            for round in 0..20 {
                let mut s = Sha256State::new();
                let mut rest = &d[..];
                while !rest.is_empty() {
                    // Mix tiny, block-sized and large pieces.
                    let cap = match next() % 4 {
                        0 => 1,
                        1 => 64,
                        2 => 200,
                        _ => rest.len(),
                    };
                    let n = (next() as usize % cap + 1).min(rest.len());
                    s.update(&rest[..n]);
                    rest = &rest[n..];
                    if next() & 7 == 0 {
                        s.update(&[]);
                    }
                }
                assert_eq!(s.finish(), want, "len {len} round {round}");
                assert_eq!(s.bytes(), len as u64);
            }
        }
    }

    #[test]
    fn finish_does_not_consume() {
        let d = data(300, 1);
        let mut s = Sha256State::new();
        s.update(&d[..100]);
        assert_eq!(s.finish(), reference(&d[..100]));
        assert_eq!(s.finish(), reference(&d[..100]));
        s.update(&d[100..]);
        assert_eq!(s.finish(), reference(&d));
    }

    #[test]
    fn serde_round_trip_mid_stream() {
        let d = data((1 << 20) + 3, 9);
        let want = reference(&d);
        for cut in [0, 1, 63, 64, 65, 1000, 4096, 100_003, d.len()] {
            let mut s = Sha256State::new();
            s.update(&d[..cut]);
            let json = serde_json::to_string(&s).unwrap();
            let mut back: Sha256State = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s, "cut {cut}: {json}");
            assert_eq!(back.bytes(), cut as u64);
            back.update(&d[cut..]);
            assert_eq!(back.finish(), want, "cut {cut}");
        }
    }

    #[test]
    fn serialized_form_is_compact() {
        let mut s = Sha256State::new();
        s.update(b"hello");
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["len"], 5);
        assert_eq!(v["buf"], "68656c6c6f");
        assert_eq!(
            v["h"],
            "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.len() < 110, "{json}");
    }

    #[test]
    fn bad_serialized_state_is_rejected() {
        let h = "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19";
        let ok = format!(r#"{{"h":"{h}","len":2,"buf":"abcd"}}"#);
        assert!(serde_json::from_str::<Sha256State>(&ok).is_ok());
        for bad in [
            format!(r#"{{"h":"{h}","len":3,"buf":"abcd"}}"#),
            format!(r#"{{"h":"{h}","len":64,"buf":"ab"}}"#),
            format!(r#"{{"h":"{h}","len":1,"buf":"zz"}}"#),
            r#"{"h":"00","len":0,"buf":""}"#.to_string(),
            r#"{"len":0,"buf":""}"#.to_string(),
        ] {
            assert!(serde_json::from_str::<Sha256State>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn equality_ignores_stale_buffer_bytes() {
        let mut a = Sha256State::new();
        a.update(&[7u8; 70]); // leaves stale bytes in buf[6..]
        let b: Sha256State = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, b);
    }

    /// Prints both throughputs (meaningful with `--release`); no timed assertion.
    #[test]
    fn throughput_sanity() {
        use std::time::Instant;
        let d = data(8 << 20, 3);
        let t = Instant::now();
        let mut s = Sha256State::new();
        for piece in d.chunks(1 << 16) {
            s.update(piece);
        }
        let ours = s.finish();
        let t_ours = t.elapsed();
        let t = Instant::now();
        let mut r = Sha256::new();
        for piece in d.chunks(1 << 16) {
            r.update(piece);
        }
        let theirs: [u8; 32] = r.finalize().into();
        let t_theirs = t.elapsed();
        assert_eq!(ours, theirs);
        let mib = d.len() as f64 / (1 << 20) as f64;
        println!(
            "Sha256State {:.0} MiB/s, sha2::Sha256 {:.0} MiB/s",
            mib / t_ours.as_secs_f64(),
            mib / t_theirs.as_secs_f64()
        );
    }
}
