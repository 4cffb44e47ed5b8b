"""RS256 (RSASSA-PKCS1-v1_5 + SHA-256) JWT signing from a PEM RSA private key.
Stdlib only (pod side of vast).

Accepts "-----BEGIN PRIVATE KEY-----" (PKCS#8, what a Google service-account JSON key
holds in "private_key") and "-----BEGIN RSA PRIVATE KEY-----" (PKCS#1). Encrypted keys
are not supported.

    token = rs256.jwt_encode(sa["private_key"], {"iss": ..., "aud": ..., "iat": ..., "exp": ...},
                             key_id=sa.get("private_key_id"))
"""

import base64
import binascii
import functools
import hashlib
import json
import re

# DER of DigestInfo ::= SEQUENCE { AlgorithmIdentifier sha256, OCTET STRING (32 bytes) }
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
RSA_ENCRYPTION_OID = "1.2.840.113549.1.1.1"

_INTEGER, _OCTET_STRING, _NULL, _OID, _SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30

_PEM_RE = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)


# ---------------------------------------------------------------------------- ASN.1 (DER)


def _read_tlv(data, pos):
    """One DER element at data[pos:] -> (tag, value bytes, next position)."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not supported")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos:end], end


def _elements(data):
    """All top-level DER elements of `data` -> list of (tag, value)."""
    out, pos = [], 0
    while pos < len(data):
        tag, value, pos = _read_tlv(data, pos)
        out.append((tag, value))
    return out


def _expect(element, tag, what):
    if element[0] != tag:
        raise ValueError("expected %s (tag 0x%02x), got tag 0x%02x" % (what, tag, element[0]))
    return element[1]


def _integer(element):
    value = _expect(element, _INTEGER, "INTEGER")
    if not value:
        raise ValueError("empty INTEGER")
    return int.from_bytes(value, "big", signed=True)


def _oid(value):
    if not value:
        raise ValueError("empty OID")
    first = value[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    acc = 0
    for byte in value[1:]:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(acc)
            acc = 0
    return ".".join(map(str, parts))


def _single(data, tag, what):
    elements = _elements(data)
    if len(elements) != 1:
        raise ValueError("trailing data after %s" % what)
    return _expect(elements[0], tag, what)


def _parse_pkcs1(der):
    """RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qinv, ... }"""
    fields = _elements(_single(der, _SEQUENCE, "RSAPrivateKey SEQUENCE"))
    if len(fields) < 9:
        raise ValueError("RSAPrivateKey has %d fields, expected 9" % len(fields))
    version, n, e, d, p, q, dp, dq, qinv = (_integer(f) for f in fields[:9])
    if version not in (0, 1):
        raise ValueError("unsupported RSAPrivateKey version %d" % version)
    if n <= 0 or e <= 0 or d <= 0:
        raise ValueError("bad RSA key numbers")
    return n, e, d, p, q, dp, dq, qinv


def _parse_pkcs8(der):
    """PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING key, ... }"""
    fields = _elements(_single(der, _SEQUENCE, "PrivateKeyInfo SEQUENCE"))
    if len(fields) < 3:
        raise ValueError("PrivateKeyInfo too short")
    _integer(fields[0])
    algorithm = _elements(_expect(fields[1], _SEQUENCE, "AlgorithmIdentifier"))
    if not algorithm:
        raise ValueError("empty AlgorithmIdentifier")
    oid = _oid(_expect(algorithm[0], _OID, "algorithm OID"))
    if oid != RSA_ENCRYPTION_OID:
        raise ValueError("not an RSA key (algorithm %s)" % oid)
    return _parse_pkcs1(_expect(fields[2], _OCTET_STRING, "privateKey OCTET STRING"))


@functools.lru_cache(maxsize=8)
def _load(pem):
    """PEM text -> (n, e, d, p, q, dp, dq, qinv)."""
    if "\\n" in pem and "\n" not in pem.strip():
        pem = pem.replace("\\n", "\n")  # key pasted from JSON with escaped newlines
    match = _PEM_RE.search(pem)
    if not match:
        raise ValueError("no PEM block found")
    label, body = match.group(1), match.group(2)
    if "Proc-Type:" in body or label == "ENCRYPTED PRIVATE KEY":
        raise ValueError("encrypted private keys are not supported")
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64 in PEM block") from None
    if label == "PRIVATE KEY":
        return _parse_pkcs8(der)
    if label == "RSA PRIVATE KEY":
        return _parse_pkcs1(der)
    raise ValueError("unsupported PEM block %r" % label)


def load_private_key(pem):
    """PEM (PKCS#8 or PKCS#1) -> (n, d). Raises ValueError on anything else."""
    n, _e, d = _load(pem)[:3]
    return n, d


# ---------------------------------------------------------------------------- signing


def _emsa_pkcs1_v15_sha256(message, k):
    t = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    if k < len(t) + 11:
        raise ValueError("RSA modulus too short for SHA-256 PKCS#1 v1.5")
    return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def sign(pem, message):
    """RSASSA-PKCS1-v1_5 signature of `message` with SHA-256 (bytes, len = modulus size)."""
    n, e, d, p, q, dp, dq, qinv = _load(pem)
    k = (n.bit_length() + 7) // 8
    m = int.from_bytes(_emsa_pkcs1_v15_sha256(bytes(message), k), "big")
    if p > 1 and q > 1 and p * q == n and dp > 0 and dq > 0 and qinv > 0:
        m1 = pow(m, dp, p)
        m2 = pow(m, dq, q)
        h = (qinv * (m1 - m2)) % p
        s = m2 + h * q
    else:
        s = pow(m, d, n)
    if pow(s, e, n) != m:  # guards against a corrupt key / faulty CRT values
        s = pow(m, d, n)
        if pow(s, e, n) != m:
            raise ValueError("RSA key is inconsistent (signature does not verify)")
    return s.to_bytes(k, "big")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_encode(pem, claims, key_id=None):
    """Compact JWS: b64url(header).b64url(claims).b64url(RS256 signature)."""
    header = {"alg": "RS256", "typ": "JWT"}
    if key_id:
        header["kid"] = key_id
    signing_input = "%s.%s" % (
        b64url(json.dumps(header, separators=(",", ":")).encode("utf-8")),
        b64url(json.dumps(claims, separators=(",", ":")).encode("utf-8")),
    )
    return signing_input + "." + b64url(sign(pem, signing_input.encode("ascii")))
