"""Tests for the stdlib-only pod modules src/pod/scripts/s3lite.py and rs256.py.

Run from the repo root: python3 -m unittest discover -s tests/pod -v
botocore (SigV4 reference) and cryptography (RSA reference) are optional here: the
tests that need them are skipped when they are missing.
"""

import base64
import datetime
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import unittest
import urllib.parse
import xml.etree.ElementTree as ET
from unittest import mock

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "pod", "scripts")
sys.path.insert(0, os.path.abspath(SCRIPTS))

import rs256  # noqa: E402
import s3lite  # noqa: E402

try:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials
    from botocore.utils import percent_encode
except ImportError:  # pragma: no cover
    S3SigV4Auth = None

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
except ImportError:  # pragma: no cover
    rsa = None

ACCESS = "AKIDEXAMPLE-vast"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NOW = datetime.datetime(2024, 5, 17, 9, 30, 15, tzinfo=datetime.timezone.utc)
S3NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def botocore_authorization(method, url, headers, body=b"", params=None, now=NOW, token=None,
                           unsigned_payload=False, region="us-east-1"):
    """Authorization header computed by botocore for the same request."""
    req = AWSRequest(method=method, url=url, headers=dict(headers), data=body or None, params=params or {})
    if unsigned_payload:
        class _Cfg:
            s3 = {"payload_signing_enabled": False}
        req.context["client_config"] = _Cfg()
    creds = ReadOnlyCredentials(ACCESS, SECRET, token)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        S3SigV4Auth(creds, "s3", region).add_auth(req)
    return req.headers["Authorization"], req.headers["X-Amz-Content-SHA256"]


# ---------------------------------------------------------------------------- SigV4


@unittest.skipIf(S3SigV4Auth is None, "botocore not installed")
class SigV4VersusBotocore(unittest.TestCase):
    def ours(self, client, method, bucket=None, key=None, query=None, headers=None, body=b"",
             payload_hash=None):
        if payload_hash is None:
            payload_hash = hashlib.sha256(body).hexdigest()
        path = client._path(bucket, key)
        signed = s3lite.sign_v4(method, client.host, path, query, headers or {}, payload_hash,
                                ACCESS, SECRET, client.region, now=NOW,
                                session_token=client._session_token)
        return path, signed

    def check(self, method, bucket=None, key=None, query=None, headers=None, body=b"",
              endpoint="http://127.0.0.1:9000", unsigned=False, token=None):
        client = s3lite.Client(endpoint, ACCESS, SECRET, session_token=token)
        payload_hash = s3lite.UNSIGNED_PAYLOAD if unsigned else None
        path, signed = self.ours(client, method, bucket, key, query, headers, body, payload_hash)
        # Independent URL for botocore: its own percent-encoding of the key.
        ref_path = "/" + bucket if bucket else "/"
        if key is not None:
            ref_path += "/" + percent_encode(key, safe="/~")
        self.assertEqual(path, ref_path)
        url = endpoint + ref_path
        expected, sha = botocore_authorization(method, url, headers or {}, body, params=query,
                                               token=token, unsigned_payload=unsigned)
        self.assertEqual(signed["Authorization"], expected)
        self.assertEqual(signed["X-Amz-Content-SHA256"], sha)
        self.assertEqual(signed["X-Amz-Date"], "20240517T093015Z")
        # Same result when botocore reads the query from the URL we actually send.
        qs = s3lite.canonical_query(query)
        if qs:
            expected2, _ = botocore_authorization(method, url + "?" + qs, headers or {}, body,
                                                  token=token, unsigned_payload=unsigned)
            self.assertEqual(signed["Authorization"], expected2)
        return signed

    def test_list_with_special_query_values(self):
        self.check("GET", "my-bucket", query={
            "list-type": "2",
            "prefix": "runs/a b/ü+=&?~*",
            "continuation-token": "1Rm/Q+k=z~x y%2F==",
            "max-keys": "1000",
        })

    def test_get_key_with_spaces_unicode_and_reserved(self):
        self.check("GET", "data", key="dir one/ünïcödé файл+plus=eq&amp;~tilde(1)!*'.bin")

    def test_get_with_range(self):
        self.check("GET", "data", key="a/b c", headers={"Range": "bytes=1024-"})

    def test_head(self):
        self.check("HEAD", "data", key="x/y z+1")

    def test_delete_objects_post_with_body(self):
        body = b'<?xml version="1.0"?><Delete><Quiet>true</Quiet><Object><Key>a b</Key></Object></Delete>'
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        self.check("POST", "data", query={"delete": ""}, body=body,
                   headers={"Content-MD5": md5, "Content-Type": "application/xml"})

    def test_list_buckets_nondefault_port_and_https_default_port(self):
        self.check("GET", endpoint="http://minio.example:9000")
        self.check("GET", "b", endpoint="https://s3.example.com")

    def test_unsigned_payload_and_session_token(self):
        self.check("GET", "b", key="k", unsigned=True, token="FwoGZXIvYXdzEXAMPLETOKEN")

    def test_signature_changes_with_time_and_secret(self):
        client = s3lite.Client("http://h:1", ACCESS, SECRET)
        a = s3lite.sign_v4("GET", client.host, "/b", None, {}, s3lite.EMPTY_SHA256, ACCESS, SECRET, now=NOW)
        b = s3lite.sign_v4("GET", client.host, "/b", None, {}, s3lite.EMPTY_SHA256, ACCESS, SECRET,
                           now=NOW + datetime.timedelta(seconds=1))
        c = s3lite.sign_v4("GET", client.host, "/b", None, {}, s3lite.EMPTY_SHA256, ACCESS, SECRET + "x", now=NOW)
        self.assertNotEqual(a["Authorization"], b["Authorization"])
        self.assertNotEqual(a["Authorization"], c["Authorization"])
        self.assertNotIn(SECRET, a["Authorization"])


# ---------------------------------------------------------------------------- stub server


class StubServer:
    """HTTP/1.1 keep-alive server; `responder(req)` returns (status, headers, body)."""

    def __init__(self, responder):
        self.responder = responder
        self.requests = []
        self.errors = []  # exceptions raised by the responder (assertions), re-raised by check()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                req = {
                    "method": self.command,
                    "raw_path": self.path,
                    "path": parts.path,
                    "query": dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)),
                    "raw_query": parts.query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                    "client_port": self.client_address[1],
                }
                stub.requests.append(req)
                try:
                    status, headers, out = stub.responder(req)
                except Exception as exc:  # reported by check(); answer 400 so no retry happens
                    stub.errors.append(exc)
                    status, headers, out = 400, {}, error_xml("StubError", type(exc).__name__)
                out = out.encode("utf-8") if isinstance(out, str) else (out or b"")
                self.send_response(status)
                headers = dict(headers or {})
                drop = headers.pop("X-Drop-Connection", None)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)
                if drop:
                    self.close_connection = True

            do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = handle_any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.endpoint = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def check(self):
        if self.errors:
            raise self.errors[0]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def error_xml(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message>'
            '<RequestId>REQ1</RequestId></Error>' % (code, message))


class S3ClientTests(unittest.TestCase):
    def start(self, responder, retries=3):
        server = StubServer(responder)
        self.addCleanup(server.close)
        self.addCleanup(server.check)
        client = s3lite.Client(server.endpoint, ACCESS, SECRET, timeout=5, retries=retries,
                               backoff_base=0.001, backoff_max=0.01)
        self.addCleanup(client.close)
        self.sleeps = []
        client._sleep = self.sleeps.append
        return server, client

    def assert_signed(self, req, endpoint):
        """The request carries a SigV4 Authorization header which, when botocore
        available, matches botocore's signature of the request as received."""
        auth = req["headers"].get("authorization", "")
        self.assertTrue(auth.startswith("AWS4-HMAC-SHA256 Credential=%s/" % ACCESS), auth)
        self.assertNotIn(SECRET, json.dumps(req["headers"]))
        if S3SigV4Auth is None:
            return
        signed_names = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
        self.assertIn("host", signed_names)
        self.assertIn("x-amz-date", signed_names)
        self.assertIn("x-amz-content-sha256", signed_names)
        headers = {k: v for k, v in req["headers"].items()
                   if k in signed_names and k not in ("host", "x-amz-date", "x-amz-content-sha256")}
        now = datetime.datetime.strptime(req["headers"]["x-amz-date"], "%Y%m%dT%H%M%SZ")
        url = endpoint + req["raw_path"]
        expected, sha = botocore_authorization(req["method"], url, headers, req["body"],
                                               now=now.replace(tzinfo=datetime.timezone.utc))
        self.assertEqual(auth, expected)
        self.assertEqual(req["headers"]["x-amz-content-sha256"], sha)

    def test_list_objects_two_pages(self):
        token = "1/tok+en= with~space&amp"

        def responder(req):
            self.assertEqual(req["method"], "GET")
            self.assertEqual(req["path"], "/bkt")
            self.assertEqual(req["query"]["list-type"], "2")
            self.assertEqual(req["query"]["prefix"], "pre fix/ü")
            if "continuation-token" not in req["query"]:
                return 200, {"Content-Type": "application/xml"}, (
                    '<?xml version="1.0" encoding="UTF-8"?>'
                    '<ListBucketResult xmlns="%s"><Name>bkt</Name><Prefix>pre fix/ü</Prefix>'
                    '<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>'
                    '<NextContinuationToken>%s</NextContinuationToken>'
                    '<Contents><Key>pre fix/ü/a &amp; b.txt</Key><LastModified>2024-05-01T12:00:00.500Z</LastModified>'
                    '<ETag>"abc"</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>'
                    '<Contents><Key>pre fix/ü/c+d=e</Key><LastModified>2024-05-01T12:00:01Z</LastModified>'
                    '<ETag>"def-2"</ETag><Size>0</Size></Contents>'
                    '</ListBucketResult>' % (S3NS, token.replace("&", "&amp;")))
            self.assertEqual(req["query"]["continuation-token"], token)
            return 200, {}, (
                '<ListBucketResult xmlns="%s"><Name>bkt</Name><IsTruncated>false</IsTruncated>'
                '<Contents><Key>pre fix/ü/z</Key><LastModified>2024-05-02T00:00:00.000Z</LastModified>'
                '<ETag>"zz"</ETag><Size>9876543210</Size></Contents></ListBucketResult>' % S3NS)

        server, client = self.start(responder)
        objs = list(client.list_objects("bkt", prefix="pre fix/ü"))
        self.assertEqual([o["Key"] for o in objs], ["pre fix/ü/a & b.txt", "pre fix/ü/c+d=e", "pre fix/ü/z"])
        self.assertEqual([o["Size"] for o in objs], [12, 0, 9876543210])
        self.assertIsInstance(objs[0]["Size"], int)
        self.assertAlmostEqual(objs[0]["LastModified"],
                               datetime.datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=datetime.timezone.utc).timestamp())
        self.assertIsInstance(objs[1]["LastModified"], float)
        self.assertEqual(objs[0]["ETag"], '"abc"')
        self.assertEqual(len(server.requests), 2)
        for req in server.requests:
            self.assert_signed(req, server.endpoint)
        # keep-alive: both pages over one connection
        self.assertEqual(server.requests[0]["client_port"], server.requests[1]["client_port"])
        self.assertEqual(self.sleeps, [])

    def test_retry_on_503_then_200_honours_retry_after(self):
        def responder(req):
            if len(server.requests) == 1:
                return 503, {"Retry-After": "2"}, error_xml("SlowDown", "Please reduce your request rate.")
            return 200, {}, ('<ListAllMyBucketsResult xmlns="%s"><Owner><ID>x</ID></Owner><Buckets>'
                             '<Bucket><Name>one</Name><CreationDate>2024-01-01T00:00:00Z</CreationDate></Bucket>'
                             '<Bucket><Name>two</Name></Bucket></Buckets></ListAllMyBucketsResult>' % S3NS)

        server, client = self.start(responder)
        self.assertEqual(client.list_buckets(), ["one", "two"])
        self.assertEqual(len(server.requests), 2)
        self.assertEqual(len(self.sleeps), 1)
        self.assertGreaterEqual(self.sleeps[0], 2.0)
        # the retry is signed afresh
        for req in server.requests:
            self.assert_signed(req, server.endpoint)

    def test_retry_exhausted_on_500(self):
        server, client = self.start(lambda req: (500, {}, error_xml("InternalError", "boom")), retries=2)
        with self.assertRaises(s3lite.S3Error) as cm:
            client.delete_bucket("b")
        self.assertEqual((cm.exception.status, cm.exception.code), (500, "InternalError"))
        self.assertEqual(len(server.requests), 3)
        self.assertEqual(len(self.sleeps), 2)
        self.assertLessEqual(max(self.sleeps), 0.01)

    def test_backoff_is_exponential_and_capped(self):
        client = s3lite.Client("http://127.0.0.1:1", ACCESS, SECRET)
        sleeps = []
        client._sleep = sleeps.append
        for attempt in range(10):
            client._backoff(attempt)
        self.assertGreaterEqual(sleeps[0], 0.5)
        self.assertLessEqual(sleeps[0], 0.5 * 1.25)
        self.assertGreaterEqual(sleeps[3], 4.0)
        self.assertEqual(sleeps[-1], 20.0)
        self.assertTrue(all(a <= b for a, b in zip(sleeps, sleeps[1:])))

    def test_no_retry_on_403_and_secret_redacted(self):
        msg = "The request signature we calculated does not match. Secret was %s" % SECRET
        server, client = self.start(lambda req: (403, {}, error_xml("SignatureDoesNotMatch", msg)))
        with self.assertRaises(s3lite.S3Error) as cm:
            list(client.list_objects("bkt"))
        err = cm.exception
        self.assertEqual(err.status, 403)
        self.assertEqual(err.code, "SignatureDoesNotMatch")
        self.assertEqual(err.request_id, "REQ1")
        self.assertEqual(len(server.requests), 1)
        self.assertEqual(self.sleeps, [])
        for text in (str(err), repr(err), err.message, repr(err.args)):
            self.assertNotIn(SECRET, text)
        self.assertIn("SignatureDoesNotMatch", str(err))

    def test_no_retry_on_404_codes(self):
        def responder(req):
            if req["method"] == "HEAD":
                return 404, {}, b""
            if req["path"] == "/nob":
                return 404, {}, error_xml("NoSuchBucket", "The specified bucket does not exist")
            return 404, {}, error_xml("NoSuchKey", "The specified key does not exist.")

        server, client = self.start(responder)
        with self.assertRaises(s3lite.S3Error) as cm:
            client.get_object("b", "missing key")
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "NoSuchKey"))
        with self.assertRaises(s3lite.S3Error) as cm:
            client.head_object("b", "missing key")
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "NoSuchKey"))
        with self.assertRaises(s3lite.S3Error) as cm:
            client.delete_bucket("nob")
        self.assertEqual(cm.exception.code, "NoSuchBucket")
        self.assertEqual(len(server.requests), 3)
        self.assertEqual(self.sleeps, [])

    def test_429_is_retried(self):
        def responder(req):
            if len(server.requests) < 3:
                return 429, {}, error_xml("SlowDown", "slow")
            return 204, {}, b""

        server, client = self.start(responder)
        client.delete_bucket("b")
        self.assertEqual(len(server.requests), 3)
        self.assertEqual(len(self.sleeps), 2)

    def test_connection_errors_retried_then_raised_without_secret(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        client = s3lite.Client("http://127.0.0.1:%d" % port, ACCESS, SECRET, timeout=2, retries=2)
        sleeps = []
        client._sleep = sleeps.append
        with self.assertRaises(s3lite.S3Error) as cm:
            client.head_object("b", "k")
        self.assertEqual(cm.exception.status, 0)
        self.assertEqual(cm.exception.code, "ConnectionError")
        self.assertEqual(len(sleeps), 2)
        self.assertNotIn(SECRET, str(cm.exception))
        self.assertNotIn(SECRET, repr(cm.exception))

    def test_get_object_streams_metadata_and_range(self):
        payload = bytes(range(256)) * 40

        def responder(req):
            if req["method"] == "GET" and req["path"].startswith("/b/"):
                start = 0
                rng = req["headers"].get("range")
                if rng:
                    start = int(rng[len("bytes="):-1])
                status = 206 if rng else 200
                return status, {
                    "Last-Modified": "Wed, 01 May 2024 12:00:00 GMT",
                    "ETag": '"e1"',
                    "x-amz-meta-Vast-Sha256": "abc",
                    "X-Amz-Meta-Mtime": "1714564800",
                }, payload[start:]
            return 200, {}, ('<ListAllMyBucketsResult><Buckets><Bucket><Name>b</Name></Bucket>'
                             '</Buckets></ListAllMyBucketsResult>')

        server, client = self.start(responder)
        key = "dir/ü file+1=2.bin"
        with client.get_object("b", key) as resp:
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.size, len(payload))
            self.assertEqual(resp.metadata, {"vast-sha256": "abc", "mtime": "1714564800"})
            self.assertEqual(resp.headers["etag"], '"e1"')
            self.assertEqual(resp.last_modified,
                             datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone.utc).timestamp())
            chunks = []
            while True:
                chunk = resp.read(1000)
                if not chunk:
                    break
                chunks.append(chunk)
            self.assertEqual(b"".join(chunks), payload)
        self.assertEqual(server.requests[0]["path"], "/b/" + urllib.parse.quote(key))
        self.assertEqual(urllib.parse.unquote(server.requests[0]["path"]), "/b/" + key)
        self.assert_signed(server.requests[0], server.endpoint)
        # connection handed back after a full read
        self.assertEqual(client.list_buckets(), ["b"])
        self.assertEqual(server.requests[0]["client_port"], server.requests[1]["client_port"])

        resp = client.get_object("b", key, range_start=1000)
        self.assertEqual(resp.status, 206)
        self.assertEqual(server.requests[-1]["headers"]["range"], "bytes=1000-")
        self.assert_signed(server.requests[-1], server.endpoint)
        self.assertEqual(resp.read(10), payload[1000:1010])
        resp.close()  # partial read: connection dropped, next call reconnects
        self.assertEqual(client.list_buckets(), ["b"])

    def test_get_object_retried_before_body(self):
        def responder(req):
            if len(server.requests) == 1:
                return 503, {}, error_xml("ServiceUnavailable", "busy")
            return 200, {}, b"hello"

        server, client = self.start(responder)
        resp = client.get_object("b", "k")
        self.assertEqual(resp.read(), b"hello")
        resp.close()
        self.assertEqual(len(server.requests), 2)
        self.assertEqual(len(self.sleeps), 1)

    def test_stale_keepalive_connection_reconnects_without_backoff(self):
        def responder(req):
            # Close the socket after answering without announcing it.
            return 200, {"X-Drop-Connection": "1"}, '<ListAllMyBucketsResult><Buckets/></ListAllMyBucketsResult>'

        server, client = self.start(responder)
        self.assertEqual(client.list_buckets(), [])
        time.sleep(0.1)
        self.assertEqual(client.list_buckets(), [])
        self.assertEqual(len(server.requests), 2)
        self.assertEqual(self.sleeps, [])

    def test_head_object(self):
        def responder(req):
            return 200, {"Content-Length": "1234", "Last-Modified": "Thu, 02 May 2024 00:00:00 GMT",
                         "ETag": '"x"', "x-amz-meta-a": "1"}, b""

        server, client = self.start(responder)
        info = client.head_object("b", "k k")
        self.assertEqual(info, {
            "Size": 1234,
            "LastModified": datetime.datetime(2024, 5, 2, tzinfo=datetime.timezone.utc).timestamp(),
            "Metadata": {"a": "1"},
            "ETag": '"x"',
        })
        self.assertEqual(server.requests[0]["method"], "HEAD")
        self.assert_signed(server.requests[0], server.endpoint)

    def test_delete_objects_batches_with_content_md5(self):
        keys = ["k/%04d" % i for i in range(1500)] + ["a & <b> ü\r\n.txt"]

        def responder(req):
            return 200, {}, '<DeleteResult xmlns="%s"></DeleteResult>' % S3NS

        server, client = self.start(responder)
        client.delete_objects("bkt", keys)
        self.assertEqual(len(server.requests), 2)
        seen = []
        for req in server.requests:
            self.assertEqual(req["method"], "POST")
            self.assertEqual(req["path"], "/bkt")
            self.assertEqual(req["raw_query"], "delete=")
            self.assertEqual(req["headers"]["content-md5"],
                             base64.b64encode(hashlib.md5(req["body"]).digest()).decode())
            self.assert_signed(req, server.endpoint)
            root = ET.fromstring(req["body"])
            objs = [c for c in root if c.tag.endswith("Object")]
            self.assertLessEqual(len(objs), 1000)
            seen += [o.find("{%s}Key" % S3NS).text for o in objs]
        self.assertEqual(seen, keys)
        client.delete_objects("bkt", [])
        self.assertEqual(len(server.requests), 2)

    def test_delete_objects_reports_per_key_error(self):
        def responder(req):
            return 200, {}, ('<DeleteResult xmlns="%s"><Error><Key>k1</Key><Code>AccessDenied</Code>'
                             '<Message>Access Denied</Message></Error></DeleteResult>' % S3NS)

        server, client = self.start(responder)
        with self.assertRaises(s3lite.S3Error) as cm:
            client.delete_objects("bkt", ["k1", "k2"])
        self.assertEqual(cm.exception.code, "AccessDenied")
        self.assertIn("k1", str(cm.exception))

    def test_from_env(self):
        c = s3lite.from_env({})
        self.assertEqual(c.endpoint, "http://localhost:9000")
        self.assertEqual((c._access_key, c._secret_key, c.region), ("minioadmin", "minioadmin", "us-east-1"))
        c = s3lite.from_env({"S3_ENDPOINT": "https://s3.example:8443/", "S3_ACCESS_KEY": "a",
                             "S3_SECRET_KEY": "s"})
        self.assertEqual((c.scheme, c.host, c.port), ("https", "s3.example:8443", 8443))
        c = s3lite.from_env({"S3_SECRET_KEY": SECRET})
        self.assertNotIn(SECRET, repr(c))


# ---------------------------------------------------------------------------- RS256


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@unittest.skipIf(rsa is None, "cryptography not installed")
class RS256Tests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cls.pkcs8 = cls.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()
        cls.pkcs1 = cls.key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()).decode()

    def test_pem_labels(self):
        self.assertIn("-----BEGIN PRIVATE KEY-----", self.pkcs8)
        self.assertIn("-----BEGIN RSA PRIVATE KEY-----", self.pkcs1)

    def test_load_private_key(self):
        numbers = self.key.private_numbers()
        for pem in (self.pkcs8, self.pkcs1):
            self.assertEqual(rs256.load_private_key(pem), (numbers.public_numbers.n, numbers.d))

    def test_sign_matches_cryptography_and_verifies(self):
        public = self.key.public_key()
        for pem in (self.pkcs8, self.pkcs1):
            for message in (b"", b"hello", os.urandom(5000)):
                sig = rs256.sign(pem, message)
                self.assertEqual(len(sig), 256)
                self.assertEqual(sig, self.key.sign(message, padding.PKCS1v15(), hashes.SHA256()))
                public.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
        with self.assertRaises(Exception):
            public.verify(rs256.sign(self.pkcs8, b"hello"), b"hellO", padding.PKCS1v15(), hashes.SHA256())

    def test_odd_key_size_and_json_escaped_pem(self):
        key = rsa.generate_private_key(public_exponent=65537, key_size=1544)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        escaped = pem.strip().replace("\n", "\\n")
        for p in (pem, escaped, "  \n" + pem + "\n\n"):
            sig = rs256.sign(p, b"msg")
            self.assertEqual(sig, key.sign(b"msg", padding.PKCS1v15(), hashes.SHA256()))

    def test_jwt_encode_verifies(self):
        claims = {"iss": "sa@proj.iam.gserviceaccount.com", "scope": "https://www.googleapis.com/auth/devstorage.read_only",
                  "aud": "https://oauth2.googleapis.com/token", "iat": 1700000000, "exp": 1700003600, "x": "ü"}
        for kid in (None, "0123abcd"):
            token = rs256.jwt_encode(self.pkcs8, claims, key_id=kid)
            self.assertNotIn("=", token)
            header_b64, claims_b64, sig_b64 = token.split(".")
            header = json.loads(b64url_decode(header_b64))
            expected_header = {"alg": "RS256", "typ": "JWT"}
            if kid:
                expected_header["kid"] = kid
            self.assertEqual(header, expected_header)
            self.assertEqual(json.loads(b64url_decode(claims_b64)), claims)
            self.key.public_key().verify(b64url_decode(sig_b64), ("%s.%s" % (header_b64, claims_b64)).encode(),
                                         padding.PKCS1v15(), hashes.SHA256())

    def test_rejects_non_rsa_and_garbage(self):
        ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        enc_pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"pw")).decode()
        bad = [ec_pem, enc_pem, "not a pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
               # truncated DER inside a well-formed PEM block
               "-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n"
               % base64.b64encode(base64.b64decode("".join(self.pkcs8.splitlines()[1:-1]))[:300]).decode()]
        for pem in bad:
            with self.assertRaises(ValueError):
                rs256.sign(pem, b"x")


class RS256NoDependencyTests(unittest.TestCase):
    def test_emsa_encoding_layout(self):
        em = rs256._emsa_pkcs1_v15_sha256(b"abc", 256)
        self.assertEqual(len(em), 256)
        self.assertTrue(em.startswith(b"\x00\x01\xff"))
        self.assertTrue(em.endswith(bytes.fromhex("3031300d060960864801650304020105000420")
                                    + hashlib.sha256(b"abc").digest()))
        self.assertEqual(em[256 - 52], 0)

    def test_der_reader(self):
        # SEQUENCE { INTEGER 0x0100, OCTET STRING "ab" } with a long-form length
        der = bytes.fromhex("30 81 08 02 02 01 00 04 02 61 62".replace(" ", ""))
        tag, value, end = rs256._read_tlv(der, 0)
        self.assertEqual((tag, end), (0x30, len(der)))
        elems = rs256._elements(value)
        self.assertEqual(rs256._integer(elems[0]), 256)
        self.assertEqual(elems[1], (0x04, b"ab"))
        self.assertEqual(rs256._oid(bytes.fromhex("2a864886f70d010101")), "1.2.840.113549.1.1.1")
        with self.assertRaises(ValueError):
            rs256._read_tlv(der[:5], 0)


if __name__ == "__main__":
    unittest.main()
