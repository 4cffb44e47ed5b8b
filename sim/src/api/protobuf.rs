//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as kubectl's generator
//! subcommands send them (`kubectl create secret|configmap|namespace|serviceaccount ...`): the
//! Kubernetes envelope (magic `k8s\0` + `runtime.Unknown`) and the few kinds those commands
//! create, decoded by a small hand-written proto wire reader into the JSON the rest of the API
//! works on. Other kinds get `None`, which the API answers with 415 as a server that has no
//! protobuf for the type (as for custom resources).
//!
//! Field numbers are those of `k8s.io/api/core/v1/generated.proto` and
//! `k8s.io/apimachinery/pkg/{runtime,apis/meta/v1}/generated.proto`; `kubectl auth can-i`'s
//! `SelfSubjectAccessReview` (`k8s.io/api/authorization/v1`) is decoded too.

use base64::Engine;
use serde_json::{json, Map, Value};

/// The magic prefix of the Kubernetes protobuf envelope.
const MAGIC: &[u8] = b"k8s\0";

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("the protobuf body does not start with the Kubernetes envelope (k8s\\0)")]
    NoEnvelope,
    #[error("truncated or malformed protobuf: {0}")]
    Malformed(&'static str),
    #[error("vast-sim has no protobuf decoding for {0}")]
    Unsupported(String),
}

/// One field of a message: (field number, value).
#[derive(Debug, Clone, PartialEq)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Error> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(Error::Malformed("varint"))?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(Error::Malformed("varint too long"))
}

/// The fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, Error> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wt) = (tag >> 3, tag & 7);
        let w = match wt {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 | 5 => {
                let n = if wt == 1 { 8 } else { 4 };
                if pos + n > buf.len() {
                    return Err(Error::Malformed("fixed-size field"));
                }
                pos += n;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| Error::Malformed("length"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or(Error::Malformed("length-delimited field"))?;
                let b = &buf[pos..end];
                pos = end;
                Wire::Bytes(b)
            }
            _ => return Err(Error::Malformed("wire type")),
        };
        out.push((num, w));
    }
    Ok(out)
}

fn string(w: &Wire<'_>) -> Result<String, Error> {
    match w {
        Wire::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed("utf-8")),
        _ => Err(Error::Malformed("expected a string")),
    }
}

fn bytes<'a>(w: &Wire<'a>) -> Result<&'a [u8], Error> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err(Error::Malformed("expected bytes")),
    }
}

/// A map entry (`key` = 1, `value` = 2) into `map`; `b64` for `map<string, bytes>` (JSON
/// renders bytes as base64).
fn map_entry(w: &Wire<'_>, map: &mut Map<String, Value>, b64: bool) -> Result<(), Error> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(bytes(w)?)? {
        match n {
            1 => k = string(&f)?,
            2 if b64 => v = json!(base64::engine::general_purpose::STANDARD.encode(bytes(&f)?)),
            2 => v = json!(string(&f)?),
            _ => {}
        }
    }
    map.insert(k, v);
    Ok(())
}

/// `ObjectMeta`: name, generateName, namespace, labels, annotations, finalizers.
fn object_meta(buf: &[u8]) -> Result<Value, Error> {
    let mut m = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for (n, f) in fields(buf)? {
        match n {
            // proto2 `optional string`s arrive empty when unset: JSON omits them
            1..=3 => {
                let v = string(&f)?;
                if !v.is_empty() {
                    let k = ["name", "generateName", "namespace"][(n - 1) as usize];
                    m.insert(k.into(), json!(v));
                }
            }
            11 => map_entry(&f, &mut labels, false)?,
            12 => map_entry(&f, &mut annotations, false)?,
            14 => finalizers.push(json!(string(&f)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

fn secret(buf: &[u8]) -> Result<Value, Error> {
    let mut o = json!({"apiVersion": "v1", "kind": "Secret"});
    let (mut data, mut string_data) = (Map::new(), Map::new());
    for (n, f) in fields(buf)? {
        match n {
            1 => o["metadata"] = object_meta(bytes(&f)?)?,
            2 => map_entry(&f, &mut data, true)?,
            3 => {
                let t = string(&f)?;
                if !t.is_empty() {
                    o["type"] = json!(t);
                }
            }
            4 => map_entry(&f, &mut string_data, false)?,
            5 => o["immutable"] = json!(matches!(f, Wire::Varint(v) if v != 0)),
            _ => {}
        }
    }
    if !data.is_empty() {
        o["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        o["stringData"] = Value::Object(string_data);
    }
    Ok(o)
}

fn config_map(buf: &[u8]) -> Result<Value, Error> {
    let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    let (mut data, mut binary) = (Map::new(), Map::new());
    for (n, f) in fields(buf)? {
        match n {
            1 => o["metadata"] = object_meta(bytes(&f)?)?,
            2 => map_entry(&f, &mut data, false)?,
            3 => map_entry(&f, &mut binary, true)?,
            4 => o["immutable"] = json!(matches!(f, Wire::Varint(v) if v != 0)),
            _ => {}
        }
    }
    if !data.is_empty() {
        o["data"] = Value::Object(data);
    }
    if !binary.is_empty() {
        o["binaryData"] = Value::Object(binary);
    }
    Ok(o)
}

fn namespace(buf: &[u8]) -> Result<Value, Error> {
    let mut o = json!({"apiVersion": "v1", "kind": "Namespace"});
    for (n, f) in fields(buf)? {
        match n {
            1 => o["metadata"] = object_meta(bytes(&f)?)?,
            2 => {
                let mut fin = Vec::new();
                for (m, g) in fields(bytes(&f)?)? {
                    if m == 1 {
                        fin.push(json!(string(&g)?));
                    }
                }
                if !fin.is_empty() {
                    o["spec"] = json!({"finalizers": fin});
                }
            }
            _ => {}
        }
    }
    Ok(o)
}

fn service_account(buf: &[u8]) -> Result<Value, Error> {
    let mut o = json!({"apiVersion": "v1", "kind": "ServiceAccount"});
    let mut pull = Vec::new();
    for (n, f) in fields(buf)? {
        match n {
            1 => o["metadata"] = object_meta(bytes(&f)?)?,
            3 => {
                for (m, g) in fields(bytes(&f)?)? {
                    if m == 1 {
                        pull.push(json!({"name": string(&g)?}));
                    }
                }
            }
            4 => o["automountServiceAccountToken"] = json!(matches!(f, Wire::Varint(v) if v != 0)),
            _ => {}
        }
    }
    if !pull.is_empty() {
        o["imagePullSecrets"] = Value::Array(pull);
    }
    Ok(o)
}

/// `SelfSubjectAccessReview` (`kubectl auth can-i`): the resource or non-resource attributes.
fn access_review(buf: &[u8]) -> Result<Value, Error> {
    let mut o = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}});
    for (n, f) in fields(buf)? {
        if n != 2 {
            continue;
        }
        for (m, g) in fields(bytes(&f)?)? {
            let (key, names): (&str, &[&str]) = match m {
                1 => (
                    "resourceAttributes",
                    &[
                        "namespace",
                        "verb",
                        "group",
                        "version",
                        "resource",
                        "subresource",
                        "name",
                    ],
                ),
                2 => ("nonResourceAttributes", &["path", "verb"]),
                _ => continue,
            };
            let mut attrs = Map::new();
            for (k, h) in fields(bytes(&g)?)? {
                let Some(name) = usize::try_from(k)
                    .ok()
                    .and_then(|k| names.get(k.wrapping_sub(1)))
                else {
                    continue;
                };
                if let Ok(v) = string(&h) {
                    if !v.is_empty() {
                        attrs.insert((*name).into(), json!(v));
                    }
                }
            }
            o["spec"][key] = Value::Object(attrs);
        }
    }
    Ok(o)
}

/// Decodes a protobuf request body into the object's JSON. `Unsupported` for kinds the sim
/// has no protobuf for (the API answers 415).
pub fn decode(body: &[u8]) -> Result<Value, Error> {
    let unknown = body.strip_prefix(MAGIC).ok_or(Error::NoEnvelope)?;
    let (mut api_version, mut kind, mut raw, mut encoding) =
        (String::new(), String::new(), &[][..], String::new());
    for (n, f) in fields(unknown)? {
        match n {
            1 => {
                for (m, g) in fields(bytes(&f)?)? {
                    match m {
                        1 => api_version = string(&g)?,
                        2 => kind = string(&g)?,
                        _ => {}
                    }
                }
            }
            2 => raw = bytes(&f)?,
            3 => encoding = string(&f)?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(Error::Unsupported(format!("content encoding {encoding}")));
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => secret(raw),
        ("v1", "ConfigMap") => config_map(raw),
        ("v1", "Namespace") => namespace(raw),
        ("v1", "ServiceAccount") => service_account(raw),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => access_review(raw),
        _ => Err(Error::Unsupported(format!("{api_version}, Kind={kind}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(n: u64, wt: u64) -> Vec<u8> {
        enc_varint((n << 3) | wt)
    }
    fn enc_varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
    fn ld(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = tag(n, 2);
        out.extend(enc_varint(b.len() as u64));
        out.extend(b);
        out
    }
    fn entry(n: u64, k: &str, v: &[u8]) -> Vec<u8> {
        ld(n, &[ld(1, k.as_bytes()), ld(2, v)].concat())
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())].concat();
        [
            MAGIC.to_vec(),
            ld(1, &tm),
            ld(2, raw),
            ld(4, b"application/vnd.kubernetes.protobuf"),
        ]
        .concat()
    }

    #[test]
    fn decodes_a_secret_as_kubectl_sends_it() {
        let meta = [
            ld(1, b"creds"),
            ld(3, b"default"),
            entry(11, "app", b"x"),
            entry(12, "note", b"n"),
        ]
        .concat();
        let raw = [
            ld(1, &meta),
            entry(2, "password", b"s3cr\x00t"),
            ld(3, b"Opaque"),
            tag(5, 0),
            vec![1],
        ]
        .concat();
        let o = decode(&envelope("v1", "Secret", &raw)).expect("decodes");
        assert_eq!(o["metadata"]["name"], "creds");
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["metadata"]["labels"]["app"], "x");
        assert_eq!(o["metadata"]["annotations"]["note"], "n");
        assert_eq!(o["data"]["password"], "czNjcgB0");
        assert_eq!(o["type"], "Opaque");
        assert_eq!(o["immutable"], true);
    }

    #[test]
    fn decodes_configmap_and_namespace_and_refuses_others() {
        let raw = [ld(1, &ld(2, b"gen-")), entry(2, "a", b"b")].concat();
        let o = decode(&envelope("v1", "ConfigMap", &raw)).expect("decodes");
        assert_eq!(o["metadata"]["generateName"], "gen-");
        assert_eq!(o["data"]["a"], "b");
        let o = decode(&envelope("v1", "Namespace", &ld(1, &ld(1, b"team")))).expect("ns");
        assert_eq!(o["metadata"]["name"], "team");
        assert_eq!(
            decode(&envelope("apps/v1", "Deployment", b"")),
            Err(Error::Unsupported("apps/v1, Kind=Deployment".into()))
        );
        assert_eq!(decode(b"{}"), Err(Error::NoEnvelope));
        assert!(matches!(
            decode(&[MAGIC, &[0x0a, 0x05, 0x01]].concat()),
            Err(Error::Malformed(_))
        ));
    }
}
