"""Minimal S3 client (pod side of vast). Stdlib only.

Path-style requests (http(s)://endpoint/bucket/key), AWS Signature Version 4, one
keep-alive connection per Client (reconnected on failure). Not thread-safe: use one
Client per thread.

    import s3lite
    c = s3lite.from_env()           # S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY
    for obj in c.list_objects("bucket", prefix="run/"):
        ...                          # {"Key", "Size", "LastModified", "ETag"}
    with c.get_object("bucket", "run/x.bin", range_start=1024) as r:
        while chunk := r.read(1 << 20):
            ...

Errors are raised as S3Error (.status, .code, .message). Connection errors, timeouts,
429 and 500/502/503/504 are retried with exponential backoff; other 4xx never are.
Credentials never appear in exception text.
"""

import base64
import datetime
import email.utils
import hashlib
import hmac
import http.client
import os
import random
import ssl
import time
import urllib.parse
import xml.etree.ElementTree as ET

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
DELETE_BATCH = 1000
MAX_RETRY_AFTER = 60.0
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"

_DEFAULT_CODES = {
    301: "PermanentRedirect",
    307: "TemporaryRedirect",
    400: "BadRequest",
    403: "AccessDenied",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    416: "InvalidRange",
    429: "SlowDown",
    500: "InternalError",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


class S3Error(Exception):
    """An S3 failure. status is the HTTP status (0 when no response was received,
    200 for a per-key failure inside a DeleteObjects response); code is the S3 error
    code (e.g. NoSuchBucket, NoSuchKey, AccessDenied) or a local one
    (ConnectionError, ReadError, MalformedResponse)."""

    def __init__(self, status, code, message, resource=None, request_id=None):
        super().__init__(status, code, message)
        self.status = int(status)
        self.code = code or ""
        self.message = message or ""
        self.resource = resource
        self.request_id = request_id

    def __str__(self):
        text = "S3 error %d %s: %s" % (self.status, self.code, self.message)
        if self.resource:
            text += " [%s]" % self.resource
        return text


# ---------------------------------------------------------------------------- signing


def _quote(text, safe):
    return urllib.parse.quote(text, safe=safe)


def canonical_query(query):
    """SigV4 canonical query string from a dict or (name, value) pairs; also used as
    the query string actually sent. Values of None become empty ("delete=")."""
    if not query:
        return ""
    items = query.items() if isinstance(query, dict) else query
    pairs = sorted(
        (_quote(str(k), "-_.~"), _quote("" if v is None else str(v), "-_.~"))
        for k, v in items
    )
    return "&".join("%s=%s" % kv for kv in pairs)


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign_v4(method, host, path, query, headers, payload_hash, access_key, secret_key,
            region="us-east-1", service="s3", now=None, session_token=None):
    """Return a new header dict: `headers` plus Host, X-Amz-Date,
    X-Amz-Content-SHA256 (= payload_hash), optional X-Amz-Security-Token and
    Authorization. `path` must already be URI-encoded (it is used verbatim as the
    canonical URI, as S3 does not normalise paths); `query` is a dict or pairs.
    `now` is a datetime (naive = UTC), default the current time. Every header
    passed in is signed."""
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    elif now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    datestamp = now.strftime("%Y%m%d")

    out = {}
    for name, value in headers.items():
        if name.lower() not in ("authorization", "host", "x-amz-date",
                                "x-amz-content-sha256", "x-amz-security-token"):
            out[name] = value
    out["Host"] = host
    out["X-Amz-Date"] = amz_date
    out["X-Amz-Content-SHA256"] = payload_hash
    if session_token:
        out["X-Amz-Security-Token"] = session_token

    canon = {}
    for name, value in out.items():
        canon[name.lower()] = " ".join(str(value).split())
    signed_headers = ";".join(sorted(canon))
    canonical_request = "\n".join((
        method.upper(),
        path or "/",
        canonical_query(query),
        "".join("%s:%s\n" % (k, canon[k]) for k in sorted(canon)),
        signed_headers,
        payload_hash,
    ))
    scope = "%s/%s/%s/aws4_request" % (datestamp, region, service)
    string_to_sign = "\n".join((
        "AWS4-HMAC-SHA256",
        amz_date,
        scope,
        hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
    ))
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), datestamp)
    key = _hmac(key, region)
    key = _hmac(key, service)
    key = _hmac(key, "aws4_request")
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        access_key, scope, signed_headers, signature)
    return out


# ---------------------------------------------------------------------------- parsing


def _local(tag):
    return tag.rsplit("}", 1)[-1]


def _children(elem, name):
    return [c for c in elem if _local(c.tag) == name]


def _text(elem, name, default=None):
    for c in elem:
        if _local(c.tag) == name:
            return c.text if c.text is not None else ""
    return default


def parse_iso8601(text):
    """'2024-05-01T12:34:56.789Z' -> unix float (None if empty)."""
    if not text:
        return None
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def parse_http_date(text):
    """RFC 7231 date (Last-Modified) -> unix float (None if absent/unparseable)."""
    if not text:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def _parse_xml(data):
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        return None


def _header_dict(resp):
    headers = {}
    for name, value in resp.getheaders():
        name = name.lower()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return headers


def _metadata(headers):
    return {k[len("x-amz-meta-"):]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _xml_escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


# ---------------------------------------------------------------------------- client


class Response:
    """A streaming GET response. .status, .headers (lower-case names), .metadata
    (x-amz-meta-*, prefix stripped), .size (Content-Length or None), .last_modified
    (unix float or None), .etag; read(n) / readinto(b) / close(); context manager.
    Read failures raise S3Error(status=0, code="ReadError")."""

    def __init__(self, client, conn, resp, resource):
        self._client = client
        self._conn = conn
        self._resp = resp
        self._resource = resource
        self.status = resp.status
        self.headers = _header_dict(resp)
        self.metadata = _metadata(self.headers)
        self.size = _int_or_none(self.headers.get("content-length"))
        self.last_modified = parse_http_date(self.headers.get("last-modified"))
        self.etag = self.headers.get("etag")
        self.closed = False

    def _fail(self, exc):
        self.close()
        return S3Error(0, "ReadError", "%s: %s" % (type(exc).__name__, self._client._redact(str(exc))),
                       self._resource)

    def read(self, n=-1):
        if self.closed:
            return b""
        try:
            data = self._resp.read(None if n is None or n < 0 else n)
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail(exc) from None
        if self._resp.isclosed():
            self._release()
        return data

    def readinto(self, buf):
        if self.closed:
            return 0
        try:
            count = self._resp.readinto(buf)
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail(exc) from None
        if self._resp.isclosed():
            self._release()
        return count

    def _release(self):
        # Body fully consumed: the connection may be reused by the client.
        if self.closed:
            return
        self.closed = True
        conn, self._conn = self._conn, None
        if conn is not None and conn.sock is not None and self._client._conn is None:
            self._client._conn = conn
        elif conn is not None:
            conn.close()

    def close(self):
        if self.closed:
            return
        if self._resp.isclosed():
            self._release()
            return
        self.closed = True
        try:
            self._resp.close()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Client:
    def __init__(self, endpoint, access_key, secret_key, region="us-east-1", timeout=300,
                 retries=8, *, session_token=None, backoff_base=0.5, backoff_max=20.0):
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("bad S3 endpoint %r" % endpoint)
        self.scheme = parts.scheme
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        host = "[%s]" % parts.hostname if ":" in parts.hostname else parts.hostname
        if parts.port is not None and parts.port != (443 if parts.scheme == "https" else 80):
            host += ":%d" % parts.port
        self.host = host
        self.base_path = parts.path.rstrip("/")
        self.endpoint = "%s://%s%s" % (self.scheme, self.host, self.base_path)
        self.region = region
        self.timeout = timeout
        self.retries = int(retries)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._access_key = access_key
        self._secret_key = secret_key
        self._session_token = session_token
        self._conn = None
        self._sleep = time.sleep

    def __repr__(self):
        return "s3lite.Client(%r)" % self.endpoint

    # ------------------------------------------------------------------ plumbing

    def _redact(self, text):
        for secret in (self._secret_key, self._session_token, self._access_key):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _new_conn(self):
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.hostname, self.port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.hostname, self.port, timeout=self.timeout)

    def _drop_conn(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self):
        self._drop_conn()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _path(self, bucket=None, key=None):
        path = self.base_path
        if bucket:
            path += "/" + _quote(bucket, "")
            if key is not None:
                path += "/" + _quote(key, "/~")
        return path or "/"

    def _backoff(self, attempt, retry_after=None):
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        delay *= 1.0 + 0.25 * random.random()
        delay = min(delay, self.backoff_max)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        self._sleep(delay)

    @staticmethod
    def _retry_after(headers):
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = parse_http_date(value)
            return None if when is None else max(0.0, when - time.time())

    def _error(self, status, reason, data, resource, has_key):
        code = message = request_id = None
        root = _parse_xml(data) if data else None
        if root is not None:
            err = root if _local(root.tag) == "Error" else next(iter(_children(root, "Error")), None)
            if err is not None:
                code = _text(err, "Code")
                message = _text(err, "Message")
                request_id = _text(err, "RequestId")
        if not code:
            code = "NoSuchKey" if status == 404 and has_key else _DEFAULT_CODES.get(status, "HTTP%d" % status)
        if not message:
            message = reason or code
        return S3Error(status, code, self._redact(message), resource, request_id)

    def _request(self, method, bucket=None, key=None, query=None, headers=None, body=b"",
                 stream=False):
        """Send a signed request (with retries). Returns (status, headers, body bytes)
        or, with stream=True, a Response. Raises S3Error for non-2xx answers."""
        path = self._path(bucket, key)
        qs = canonical_query(query)
        url = path + ("?" + qs if qs else "")
        resource = (bucket or "") + ("/" + key if key is not None else "")
        resource = resource or "/"
        payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        attempt = 0
        while True:
            signed = sign_v4(method, self.host, path, query, headers or {}, payload_hash,
                             self._access_key, self._secret_key, self.region,
                             session_token=self._session_token)
            conn = self._conn
            reused = conn is not None and conn.sock is not None
            if conn is None:
                conn = self._conn = self._new_conn()
            try:
                conn.request(method, url, body=body if body else None, headers=signed)
                resp = conn.getresponse()
                status = resp.status
                if stream and 200 <= status < 300:
                    self._conn = None  # the Response owns the connection now
                    return Response(self, conn, resp, resource)
                data = resp.read()
                resp_headers = _header_dict(resp)
            except (OSError, http.client.HTTPException) as exc:
                self._drop_conn()
                if reused and isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                               BrokenPipeError)):
                    continue  # stale keep-alive connection: reconnect at once, no penalty
                if attempt >= self.retries:
                    raise S3Error(0, "ConnectionError", "%s %s failed after %d attempts: %s: %s" % (
                        method, resource, attempt + 1, type(exc).__name__, self._redact(str(exc))),
                        resource) from None
                self._backoff(attempt)
                attempt += 1
                continue
            if 200 <= status < 300:
                return status, resp_headers, data
            if status in RETRY_STATUSES and attempt < self.retries:
                self._backoff(attempt, self._retry_after(resp_headers))
                attempt += 1
                continue
            raise self._error(status, resp.reason, data, resource, key is not None)

    def _xml(self, data, resource):
        root = _parse_xml(data)
        if root is None:
            raise S3Error(0, "MalformedResponse", "response is not XML", resource)
        return root

    # ------------------------------------------------------------------ API

    def list_buckets(self):
        _, _, data = self._request("GET")
        root = self._xml(data, "/")
        names = []
        for buckets in _children(root, "Buckets"):
            for b in _children(buckets, "Bucket"):
                names.append(_text(b, "Name", ""))
        return names

    def list_objects(self, bucket, prefix="", max_keys=None):
        """ListObjectsV2, following continuation tokens. Yields
        {"Key", "Size" (int), "LastModified" (unix float), "ETag"}."""
        token = None
        while True:
            query = {"list-type": "2"}
            if prefix:
                query["prefix"] = prefix
            if max_keys:
                query["max-keys"] = str(max_keys)
            if token:
                query["continuation-token"] = token
            _, _, data = self._request("GET", bucket, query=query)
            root = self._xml(data, bucket)
            for c in _children(root, "Contents"):
                yield {
                    "Key": _text(c, "Key", ""),
                    "Size": int(_text(c, "Size", "0") or 0),
                    "LastModified": parse_iso8601(_text(c, "LastModified")),
                    "ETag": _text(c, "ETag"),
                }
            truncated = (_text(root, "IsTruncated", "false") or "").strip().lower() == "true"
            token = _text(root, "NextContinuationToken")
            if not truncated:
                return
            if not token:
                raise S3Error(0, "MalformedResponse",
                              "truncated listing without NextContinuationToken", bucket)

    def get_object(self, bucket, key, range_start=None):
        """Streaming GET; retried only until the response headers arrive. With
        range_start, sends Range: bytes=<start>- (status 206)."""
        headers = {}
        if range_start is not None:
            headers["Range"] = "bytes=%d-" % int(range_start)
        return self._request("GET", bucket, key, headers=headers, stream=True)

    def head_object(self, bucket, key):
        _, h, _ = self._request("HEAD", bucket, key)
        return {
            "Size": _int_or_none(h.get("content-length")),
            "LastModified": parse_http_date(h.get("last-modified")),
            "Metadata": _metadata(h),
            "ETag": h.get("etag"),
        }

    def put_object(self, bucket, key, data, metadata=None, content_type=None):
        """Single PUT of a bytes body (small objects; the payload is signed)."""
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()}
        if content_type:
            headers["Content-Type"] = content_type
        for name, value in (metadata or {}).items():
            headers["x-amz-meta-" + name.lower()] = value
        _, h, _ = self._request("PUT", bucket, key, headers=headers, body=bytes(data))
        return h.get("etag")

    def delete_objects(self, bucket, keys):
        """DeleteObjects (quiet mode), up to 1000 keys per request. Raises S3Error
        (status 200, the per-key code) if the server reports a key it could not
        delete; keys that do not exist count as deleted."""
        keys = list(keys)
        for i in range(0, len(keys), DELETE_BATCH):
            chunk = keys[i:i + DELETE_BATCH]
            body = ('<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="%s"><Quiet>true</Quiet>' % S3_NS
                    + "".join("<Object><Key>%s</Key></Object>" % _xml_escape(k) for k in chunk)
                    + "</Delete>").encode("utf-8")
            headers = {
                "Content-MD5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
                "Content-Type": "application/xml",
            }
            _, _, data = self._request("POST", bucket, query={"delete": ""}, headers=headers, body=body)
            root = self._xml(data, bucket) if data.strip() else None
            if root is None:
                continue
            for err in _children(root, "Error"):
                key = _text(err, "Key", "")
                raise S3Error(200, _text(err, "Code", "") or "DeleteFailed",
                              self._redact(_text(err, "Message", "") or "delete failed"),
                              "%s/%s" % (bucket, key))

    def delete_bucket(self, bucket):
        self._request("DELETE", bucket)


def from_env(environ=None):
    """Client from S3_ENDPOINT (default http://localhost:9000), S3_ACCESS_KEY and
    S3_SECRET_KEY (default minioadmin), S3_REGION (default us-east-1)."""
    env = os.environ if environ is None else environ
    return Client(
        env.get("S3_ENDPOINT") or "http://localhost:9000",
        env.get("S3_ACCESS_KEY") or "minioadmin",
        env.get("S3_SECRET_KEY") or "minioadmin",
        region=env.get("S3_REGION") or "us-east-1",
    )
