"""archive.py (bucket -> tar.gz) against an in-test S3-compatible stub server.

    python3 -m unittest discover -s tests/pod -v

The script is run as a subprocess with `python -S` (no site-packages, so no boto3: what
the python:3.12-alpine pod image has), once with pigz (when installed) and once with the
gzip module.
"""

import datetime
import email.utils
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import unittest
import urllib.parse
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "src" / "pod" / "scripts" / "archive.py"
BUCKET = "run-42"
ACCESS = "AKIA-archive-test"
SECRET = "archive-Secret-Key/xyz+123"
PAGE = 3
RUN_TIMEOUT = 60
MIB = 1024 * 1024


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def iso8601(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Obj:
    def __init__(self, data, mtime, meta=None):
        self.data = data
        self.mtime = mtime
        self.meta = meta or {}
        self.etag = '"%s"' % hashlib.md5(data).hexdigest()


class StubS3:
    """ListObjectsV2 (PAGE keys per page, each page in reverse order), GetObject with
    metadata / Last-Modified / ETag / Range. Knobs: break_once (key -> the first GET sends
    half of the body, then drops the connection), forbidden (keys answered 403),
    etag_after_break (key -> ETag served after the break)."""

    def __init__(self):
        self.objects = {}
        self.break_once = set()
        self.forbidden = set()
        self.etag_after_break = {}
        self.broken = set()
        self.log = []
        self.lock = threading.Lock()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def error(self, status, code, message):
                body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code>"
                        "<Message>%s</Message><RequestId>r1</RequestId></Error>"
                        % (code, escape(message))).encode()
                self.send(status, body, [("Content-Type", "application/xml")])

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                parts = url.path.lstrip("/").split("/", 1)
                bucket = urllib.parse.unquote(parts[0])
                key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else None
                auth = self.headers.get("Authorization", "")
                with stub.lock:
                    stub.log.append({"path": url.path, "query": query, "key": key,
                                     "range": self.headers.get("Range"),
                                     "if_match": self.headers.get("If-Match"), "auth": auth})
                if not auth.startswith("AWS4-HMAC-SHA256 Credential=%s/" % ACCESS):
                    return self.error(403, "InvalidAccessKeyId", "bad credentials")
                if bucket != BUCKET:
                    return self.error(404, "NoSuchBucket", "no such bucket")
                if key is None:
                    return self.list(query)
                return self.get(key)

            def list(self, query):
                if query.get("list-type") != "2":
                    return self.error(400, "InvalidArgument", "want ListObjectsV2")
                keys = sorted(stub.objects)
                start = int(query.get("continuation-token") or 0)
                page = keys[start:start + PAGE]
                more = start + PAGE < len(keys)
                items = "".join(
                    "<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>%s</ETag>"
                    "<Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>"
                    % (escape(k), iso8601(stub.objects[k].mtime), escape(stub.objects[k].etag),
                       len(stub.objects[k].data))
                    for k in reversed(page))
                body = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
                        'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>%s</Name>'
                        '<KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys><IsTruncated>%s</IsTruncated>%s%s'
                        '</ListBucketResult>' % (
                            BUCKET, len(page), PAGE, "true" if more else "false",
                            "<NextContinuationToken>%d</NextContinuationToken>" % (start + PAGE)
                            if more else "", items)).encode()
                self.send(200, body, [("Content-Type", "application/xml")])

            def get(self, key):
                obj = stub.objects.get(key)
                if key in stub.forbidden:
                    return self.error(403, "AccessDenied", "Access Denied for %s" % SECRET)
                if obj is None:
                    return self.error(404, "NoSuchKey", "no such key")
                etag = obj.etag
                if key in stub.broken and key in stub.etag_after_break:
                    etag = stub.etag_after_break[key]
                headers = [("ETag", etag), ("Last-Modified", http_date(obj.mtime)),
                           ("Content-Type", "application/octet-stream")]
                headers += [("x-amz-meta-" + k, v) for k, v in obj.meta.items()]
                data, status = obj.data, 200
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng[len("bytes="):].rstrip("-"))
                    headers.append(("Content-Range", "bytes %d-%d/%d"
                                    % (start, len(obj.data) - 1, len(obj.data))))
                    data, status = obj.data[start:], 206
                if key in stub.break_once and key not in stub.broken:
                    stub.broken.add(key)
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send(status, data, headers)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class ArchiveTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="vast-archive-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.stub = StubS3()
        self.addCleanup(self.stub.stop)
        self.nopigz = self.tmp / "bin"  # a PATH without pigz
        self.nopigz.mkdir()
        big = os.urandom(3 * MIB + 4321)
        self.stub.objects.update({
            "bin/tool.sh": Obj(b"#!/bin/sh\necho hi\n", 1700000000, {"mode": "0755"}),
            "bin/mc.sh": Obj(b"#!/bin/sh\n", 1700000001,
                             {"mc-attrs": "atime:1700000099#gid:0#mode:33261#mtime:1600000000#uid:0"}),
            "data/big.bin": Obj(big, 1700000002),
            "data/empty": Obj(b"", 1700000003),
            "docs/read me \u00fc+&.txt": Obj("h\u00e9llo\n".encode(), 1700000004),
            "logs/": Obj(b"", 1700000005),  # a "directory" marker: skipped
            "z.txt": Obj(b"last\n", 1700000006, {"Mode": "600"}),
        })
        self.archive_path = self.tmp / "out" / "run-42.tar.gz"

    def run_archive(self, pigz=True, bucket=BUCKET, **over):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "S3_"))}
        env.update({
            "S3_ENDPOINT": self.stub.endpoint, "S3_ACCESS_KEY": ACCESS, "S3_SECRET_KEY": SECRET,
            "VAST_PROGRESS_FILE": str(self.tmp / "progress.json"),
            "VAST_RESULT_FILE": str(self.tmp / "result.json"),
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        if not pigz:
            env["PATH"] = str(self.nopigz)
        for k, v in over.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        p = subprocess.run([sys.executable, "-S", str(SCRIPT), bucket, str(self.archive_path)],
                           env=env, capture_output=True, timeout=RUN_TIMEOUT)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def expected(self):
        return {k: o for k, o in self.stub.objects.items() if not k.endswith("/")}

    def assert_archive(self, out):
        path = self.archive_path
        self.assertTrue(path.is_file())
        self.assertFalse(Path(str(path) + ".partial").exists())
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        self.assertEqual(Path(str(path) + ".sha256").read_text(), "%s  run-42.tar.gz\n" % digest)
        self.assertEqual(json.loads((self.tmp / "result.json").read_text()), {
            "size": len(raw), "sha256": digest, "objects": len(self.expected()),
            "bytes": sum(len(o.data) for o in self.expected().values())})
        progress = json.loads((self.tmp / "progress.json").read_text())
        self.assertEqual(progress, {
            "bytes": sum(len(o.data) for o in self.expected().values()),
            "total": sum(len(o.data) for o in self.expected().values()),
            "objects": len(self.expected()), "total_objects": len(self.expected()),
            "written": len(raw)})
        self.assertIn("archived %d objects" % len(self.expected()), out)
        self.assertEqual(sorted(os.listdir(path.parent)), ["run-42.tar.gz", "run-42.tar.gz.sha256"])

        want = {
            "bin/mc.sh": (0o755, 1600000000),
            "bin/tool.sh": (0o755, 1700000000),
            "data/big.bin": (0o644, 1700000002),
            "data/empty": (0o644, 1700000003),
            "docs/read me \u00fc+&.txt": (0o644, 1700000004),
            "z.txt": (0o600, 1700000006),
        }
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            members = tar.getmembers()
            self.assertEqual([m.name for m in members], ["%s/%s" % (BUCKET, k) for k in sorted(want)])
            for m in members:
                key = m.name[len(BUCKET) + 1:]
                obj = self.stub.objects[key]
                self.assertTrue(m.isreg(), m.name)
                self.assertEqual(m.size, len(obj.data), m.name)
                self.assertEqual((m.mode, m.mtime), want[key], m.name)
                self.assertEqual((m.uid, m.gid), (0, 0))
                self.assertEqual(tar.extractfile(m).read(), obj.data, m.name)
        return raw

    def assert_nothing_written(self):
        parent = self.archive_path.parent
        self.assertEqual(os.listdir(parent) if parent.exists() else [], [])

    def modes(self):
        yield "gzip", False
        if shutil.which("pigz"):
            yield "pigz", True

    # ---- tests

    def test_archive_with_two_listing_pages_and_a_body_broken_once(self):
        for name, pigz in self.modes():
            with self.subTest(compressor=name):
                self.stub.break_once = {"data/big.bin"}
                self.stub.broken = set()
                self.stub.log.clear()
                rc, out, err = self.run_archive(pigz=pigz)
                self.assertEqual(rc, 0, err)
                self.assertEqual(err, "")
                raw = self.assert_archive(out)
                self.assertEqual(raw[:2], b"\x1f\x8b")
                self.assertEqual(raw[8], 0, "XFL of the default level 6")
                lists = [e for e in self.stub.log if e["key"] is None]
                self.assertEqual([e["query"].get("continuation-token") for e in lists],
                                 [None, "3", "6"])
                gets = [e for e in self.stub.log if e["key"] == "data/big.bin"]
                half = len(self.stub.objects["data/big.bin"].data) // 2
                self.assertEqual([e["range"] for e in gets], [None, "bytes=%d-" % half])
                self.assertNotIn(SECRET, json.dumps(self.stub.log))
                shutil.rmtree(self.archive_path.parent)

    def test_gzip_level_from_environment(self):
        for name, pigz in self.modes():
            with self.subTest(compressor=name):
                rc, out, err = self.run_archive(pigz=pigz, VAST_ARCHIVE_LEVEL="1")
                self.assertEqual(rc, 0, err)
                raw = self.assert_archive(out)
                self.assertEqual(raw[8], 4, "XFL of level 1 (fastest)")
                shutil.rmtree(self.archive_path.parent)
        rc, out, err = self.run_archive(VAST_ARCHIVE_LEVEL="12")
        self.assertEqual(rc, 1)
        self.assertEqual(err, "ERROR: VAST_ARCHIVE_LEVEL must be 0..9\n")
        self.assert_nothing_written()

    def test_refused_key_exits_2_without_archive(self):
        self.stub.objects["data/../escape"] = Obj(b"x", 1700000000)
        rc, out, err = self.run_archive()
        self.assertEqual(rc, 2)
        self.assertIn("ERROR: refusing object key 'data/../escape': it has a '..' component", err)
        self.assert_nothing_written()
        self.assertEqual([e for e in self.stub.log if e["key"]], [], "no GetObject at all")

    def test_s3_403_exits_1_without_archive_or_secret(self):
        for name, pigz in self.modes():
            with self.subTest(compressor=name):
                self.stub.forbidden = {"docs/read me \u00fc+&.txt"}
                rc, out, err = self.run_archive(pigz=pigz)
                self.assertEqual(rc, 1)
                self.assertEqual(err, "ERROR: S3 GetObject failed: AccessDenied (HTTP 403)\n")
                self.assertNotIn(SECRET, out + err)
                self.assert_nothing_written()

    def test_listing_403_and_missing_bucket(self):
        rc, out, err = self.run_archive(S3_ACCESS_KEY="someone-else")
        self.assertEqual(rc, 1)
        self.assertEqual(err, "ERROR: S3 ListObjectsV2 failed: InvalidAccessKeyId (HTTP 403)\n")
        self.assertNotIn(SECRET, out + err)
        rc, out, err = self.run_archive(bucket="nope")
        self.assertEqual(rc, 1)
        self.assertEqual(err, "ERROR: S3 ListObjectsV2 failed: NoSuchBucket (HTTP 404)\n")
        self.assert_nothing_written()

    def test_object_changed_during_refetch_fails(self):
        self.stub.break_once = {"data/big.bin"}
        self.stub.etag_after_break = {"data/big.bin": '"another-version"'}
        rc, out, err = self.run_archive(pigz=False)
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"^ERROR: object changed while it was being read \(ETag .*\n$")
        self.assert_nothing_written()

    def test_empty_bucket(self):
        self.stub.objects.clear()
        rc, out, err = self.run_archive(pigz=False)
        self.assertEqual(rc, 0, err)
        with tarfile.open(self.archive_path, "r:gz") as tar:
            self.assertEqual(tar.getmembers(), [])
        self.assertEqual(json.loads((self.tmp / "result.json").read_text())["objects"], 0)

    def test_no_boto3(self):
        source = SCRIPT.read_text()
        self.assertNotIn("boto", source)
        self.assertIn("import s3lite", source)


if __name__ == "__main__":
    unittest.main()
