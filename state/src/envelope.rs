//! The versioned envelope around every persisted value: `b"VST" | version | kind | bincode`.

use serde::{de::DeserializeOwned, Serialize};

/// The envelope format version written by this build.
pub const FORMAT_VERSION: u8 = 1;
const MAGIC: &[u8; 3] = b"VST";
const HEADER: usize = 5;

/// Why bytes could not be decoded (or a value encoded).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("record too short ({0} bytes) to hold an envelope")]
    TooShort(usize),
    #[error("record does not start with the vast envelope marker (corrupt or foreign data)")]
    BadMagic,
    #[error("record has envelope version {found}; this vast reads version {FORMAT_VERSION} (written by a newer or older vast?)")]
    UnknownVersion { found: u8 },
    #[error("record is of kind {found}, expected kind {expected}")]
    WrongKind { expected: u8, found: u8 },
    #[error("record payload is corrupt: {0}")]
    Corrupt(String),
    #[error("record payload has {0} trailing bytes (corrupt)")]
    Trailing(usize),
    #[error("cannot encode record: {0}")]
    Encode(String),
}

/// Encodes `value` of record `kind` into an envelope.
pub fn encode<T: Serialize>(kind: u8, value: &T) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind);
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes an envelope holding a record of `kind`.
pub fn decode<T: DeserializeOwned>(kind: u8, bytes: &[u8]) -> Result<T, EnvelopeError> {
    if bytes.len() < HEADER {
        return Err(EnvelopeError::TooShort(bytes.len()));
    }
    if &bytes[..3] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if bytes[3] != FORMAT_VERSION {
        return Err(EnvelopeError::UnknownVersion { found: bytes[3] });
    }
    if bytes[4] != kind {
        return Err(EnvelopeError::WrongKind {
            expected: kind,
            found: bytes[4],
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice(&bytes[HEADER..], bincode::config::standard())
            .map_err(|e| EnvelopeError::Corrupt(e.to_string()))?;
    let rest = bytes.len() - HEADER - used;
    if rest != 0 {
        return Err(EnvelopeError::Trailing(rest));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Ev {
        A { x: u64, s: String },
        B(Option<String>),
    }

    #[test]
    fn roundtrip() {
        for v in [
            Ev::A {
                x: 42,
                s: "hé".into(),
            },
            Ev::B(None),
            Ev::B(Some("{}".into())),
        ] {
            let b = encode(9, &v).expect("encode");
            assert_eq!(decode::<Ev>(9, &b).expect("decode"), v);
        }
    }

    #[test]
    fn decoding_errors_are_errors_not_panics() {
        let good = encode(
            9,
            &Ev::A {
                x: 1,
                s: "abc".into(),
            },
        )
        .expect("encode");
        assert_eq!(decode::<Ev>(9, &good[..2]), Err(EnvelopeError::TooShort(2)));
        assert_eq!(
            decode::<Ev>(9, b"XYZ\x01\x09\x00"),
            Err(EnvelopeError::BadMagic)
        );
        let mut v2 = good.clone();
        v2[3] = 2;
        assert_eq!(
            decode::<Ev>(9, &v2),
            Err(EnvelopeError::UnknownVersion { found: 2 })
        );
        assert_eq!(
            decode::<Ev>(8, &good),
            Err(EnvelopeError::WrongKind {
                expected: 8,
                found: 9
            })
        );
        let mut bad = good.clone();
        bad[5] = 77; // unknown enum variant
        assert!(matches!(
            decode::<Ev>(9, &bad),
            Err(EnvelopeError::Corrupt(_))
        ));
        let truncated = &good[..good.len() - 1];
        assert!(matches!(
            decode::<Ev>(9, truncated),
            Err(EnvelopeError::Corrupt(_))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode::<Ev>(9, &trailing), Err(EnvelopeError::Trailing(1)));
        let msg = decode::<Ev>(9, &v2).expect_err("version").to_string();
        assert!(msg.contains("version 2"), "{msg}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..200 {
            let mut bytes = vec![b'V', b'S', b'T', FORMAT_VERSION, 9];
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                bytes.push((seed >> 33) as u8);
            }
            let _ = decode::<Ev>(9, &bytes);
        }
    }
}
