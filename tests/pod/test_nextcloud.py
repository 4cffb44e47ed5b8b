"""Tests of src/pod/scripts/upload_nextcloud.py against tests/fixtures/fake_nextcloud.py
(chunked v2, resume, retries, sub-path installations) and wsgidav (legacy single PUT)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UPLOADER = ROOT / "src" / "pod" / "scripts" / "upload_nextcloud.py"
FAKE = ROOT / "tests" / "fixtures" / "fake_nextcloud.py"

MiB = 1024 * 1024
SIZE = 4 * MiB + 12345          # 5 chunks of 1 MiB (the last one short)
CHUNK = MiB
TOKEN = "AbCdEfGh12345678"

try:
    import wsgidav  # noqa: F401
    import cheroot  # noqa: F401
    HAVE_WSGIDAV = True
except ImportError:
    HAVE_WSGIDAV = False

WSGIDAV_SERVER = r"""
import os, sys
from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp
root, token, password, port_file = sys.argv[1:5]
app = WsgiDAVApp({
    "host": "127.0.0.1", "port": 0,
    "provider_mapping": {"/public.php/webdav": root},
    "http_authenticator": {"domain_controller": None, "accept_basic": True,
                           "accept_digest": False, "default_to_digest": False},
    "simple_dc": {"user_mapping": {"*": {token: {"password": password}}}},
    "verbose": 0, "logging": {"enable": False},
})
server = wsgi.Server(("127.0.0.1", 0), app)
server.prepare()
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.bind_addr[1]))
os.replace(port_file + ".tmp", port_file)
server.serve()
"""


def load_uploader():
    spec = importlib.util.spec_from_file_location("upload_nextcloud", UPLOADER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class ShareUrlTest(unittest.TestCase):
    def test_parse(self):
        mod = load_uploader()
        cases = {
            "https://cloud.example.com/s/AbC": ("https://cloud.example.com", "AbC"),
            "https://cloud.example.com:8443/s/AbC/": ("https://cloud.example.com:8443", "AbC"),
            "https://h/nextcloud/s/AbC": ("https://h/nextcloud", "AbC"),
            "https://h/nextcloud/index.php/s/AbC": ("https://h/nextcloud", "AbC"),
            "https://h/index.php/s/AbC?dir=/": ("https://h", "AbC"),
            "https://h/some/path/AbC": ("https://h", "AbC"),
        }
        for url, want in cases.items():
            self.assertEqual(mod.parse_share_url(url), want, url)


class UploadTestBase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.share = self.dir / "share"
        self.share.mkdir()
        self.archive = self.dir / "data" / "run-7.tar.gz"
        self.archive.parent.mkdir()
        self.archive.write_bytes(os.urandom(SIZE))
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stderr:
                p.stderr.close()
        self.tmp.cleanup()

    def spawn_server(self, argv):
        """argv with "{port_file}" where the server takes the file to write its port to."""
        port_file = self.dir / ("port-%d" % len(self.procs))
        argv = [str(port_file) if a == "{port_file}" else a for a in argv]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        deadline = time.monotonic() + 15
        while not port_file.exists():
            if proc.poll() is not None:
                self.fail("server died: %s" % proc.stderr.read().decode(errors="replace"))
            if time.monotonic() > deadline:
                self.fail("server did not start")
            time.sleep(0.05)
        return int(port_file.read_text())

    def start_fake(self, *extra, token=TOKEN):
        self.port = self.spawn_server([sys.executable, str(FAKE), "--root", str(self.share),
                                       "--token", token] + list(extra) + ["--port-file", "{port_file}"])
        return self.port

    def admin(self, method, path):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), method=method,
                                     data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read()) if path.endswith("stats") else resp.read()

    def env(self, url, **extra):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir),
               "ROBOVAST_SHARE_URL": url, "VAST_ARCHIVE": str(self.archive),
               "VAST_CHUNK_SIZE": str(CHUNK), "VAST_HTTP_TIMEOUT": "20",
               "VAST_PROGRESS_FILE": str(self.dir / "progress.json")}
        env.update({k: v for k, v in extra.items() if v is not None})
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
        return env

    def upload(self, url, timeout=40, **extra):
        proc = subprocess.run([sys.executable, str(UPLOADER), "run-7"], env=self.env(url, **extra),
                              capture_output=True, timeout=timeout)
        self.out = proc.stdout.decode("utf-8", errors="replace")
        self.err = proc.stderr.decode("utf-8", errors="replace")
        return proc.returncode

    def url(self, path="/s/" + TOKEN):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def assert_uploaded(self):
        stored = self.share / self.archive.name
        self.assertTrue(stored.exists(), "not uploaded; stderr: %s" % self.err)
        self.assertEqual(stored.read_bytes(), self.archive.read_bytes(), "not byte-identical")

    def state(self):
        return json.loads(Path(str(self.archive) + ".nextcloud.json").read_text())

    def progress(self):
        return json.loads((self.dir / "progress.json").read_text())


class FakeNextcloudTest(UploadTestBase):
    def test_chunked_upload_is_byte_identical(self):
        self.start_fake()
        rc = self.upload(self.url())
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()
        stats = self.admin("GET", "/admin/stats")
        self.assertEqual(stats["puts"], 5)
        self.assertEqual(stats["moves"], 1)
        self.assertEqual(stats["bytes_received"], SIZE)
        self.assertEqual(self.state()["mode"], "chunked")
        self.assertEqual(self.progress(), {"bytes": SIZE, "total": SIZE, "resumed_from": 0})
        self.assertTrue(self.out.startswith("run-7  uploading to Nextcloud...\n"), self.out)
        self.assertIn("100.0%", self.out)
        self.assertIn("\u2588" * 20, self.out)
        self.assertTrue(self.out.endswith("\rrun-7  uploaded (4.0 MiB)  \u2713\033[K\n"), repr(self.out[-80:]))
        self.assertEqual(self.err, "")
        self.assertFalse((self.share / ".uploads").exists() and any((self.share / ".uploads").iterdir()),
                         "the upload collection must be gone")

    def test_resume_after_sigkill_resends_at_most_one_chunk(self):
        self.start_fake()
        self.admin("POST", "/admin/delay?seconds=0.25")
        proc = subprocess.Popen([sys.executable, str(UPLOADER), "run-7"], env=self.env(self.url()),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        uploads = self.share / ".uploads"
        deadline = time.monotonic() + 20
        while True:
            stored = [p for d in uploads.glob("*") for p in d.iterdir() if ".part." not in p.name] \
                if uploads.exists() else []
            if len(stored) >= 2:
                break
            self.assertIsNone(proc.poll(), "the uploader finished before it could be killed")
            self.assertLess(time.monotonic(), deadline, "no chunks arrived")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.assertFalse((self.share / self.archive.name).exists())
        self.admin("POST", "/admin/delay?seconds=0")

        rc = self.upload(self.url())
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()
        stats = self.admin("GET", "/admin/stats")
        self.assertLessEqual(stats["bytes_received"], SIZE + CHUNK,
                             "more than one chunk was sent twice: %r" % stats)
        self.assertEqual(stats["moves"], 1)
        resumed = self.progress()["resumed_from"]
        self.assertGreaterEqual(resumed, 2 * CHUNK)
        self.assertEqual(self.progress()["bytes"], SIZE)

    def test_injected_503s_are_retried(self):
        self.start_fake()
        self.admin("POST", "/admin/fail?count=2&code=503")
        rc = self.upload(self.url())
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()
        self.assertEqual(self.admin("GET", "/admin/stats")["puts"], 5 + 2)

    def test_retry_after_is_honoured(self):
        self.start_fake()
        # without Retry-After the backoff would wait 1 + 2 + 4 s
        self.admin("POST", "/admin/fail?count=3&code=429&retry_after=0")
        started = time.monotonic()
        rc = self.upload(self.url())
        self.assertEqual(rc, 0, self.err)
        self.assertLess(time.monotonic() - started, 5)
        self.assert_uploaded()

    def test_dropped_connection_is_retried(self):
        self.start_fake()
        self.admin("POST", "/admin/fail?count=1&code=0")  # close without an answer
        rc = self.upload(self.url())
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()
        self.assertEqual(self.admin("GET", "/admin/stats")["puts"], 6)

    def test_persistent_5xx_fails_after_retries(self):
        self.start_fake()
        self.admin("POST", "/admin/fail?count=100&code=500&retry_after=0")
        rc = self.upload(self.url())
        self.assertEqual(rc, 1)
        self.assertIn("ERROR: HTTP 500 uploading run-7.tar.gz to Nextcloud", self.err)
        self.assertEqual(self.admin("GET", "/admin/stats")["puts"], 8)

    def test_wrong_token_fails_without_printing_it(self):
        self.start_fake()
        wrong = "WrongToken987654"
        rc = self.upload(self.url("/s/" + wrong))
        self.assertEqual(rc, 1)
        self.assertIn("ERROR: HTTP 401 uploading run-7.tar.gz to Nextcloud:", self.err)
        self.assertEqual(len(self.err.strip().splitlines()), 1, self.err)
        for secret in (wrong, TOKEN):
            self.assertNotIn(secret, self.out + self.err)

    def test_wrong_password_is_not_printed(self):
        self.start_fake("--password", "right-pw")
        rc = self.upload(self.url(), ROBOVAST_SHARE_PASSWORD="hunter2-wrong")
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 401", self.err)
        self.assertNotIn("hunter2", self.out + self.err)
        self.assertNotIn(TOKEN, self.out + self.err)
        rc = self.upload(self.url(), ROBOVAST_SHARE_PASSWORD="right-pw")
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()

    def test_subpath_installation(self):
        self.start_fake("--prefix", "/nextcloud")
        rc = self.upload(self.url("/nextcloud/index.php/s/" + TOKEN))
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()
        self.assertEqual(self.state()["mode"], "chunked")
        # upstream's mapping (path dropped) cannot reach a sub-path installation
        (self.share / self.archive.name).unlink()
        rc = self.upload("http://127.0.0.1:%d/s/%s" % (self.port, TOKEN))
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 404", self.err)

    def test_old_version_uses_single_put(self):
        self.start_fake("--version", "31.0.9.1")
        rc = self.upload(self.url())
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()
        stats = self.admin("GET", "/admin/stats")
        self.assertEqual((stats["puts"], stats["moves"], stats["mkcols"]), (1, 0, 0))
        self.assertEqual(self.state()["mode"], "single")

    def test_no_status_php_uses_single_put_and_retries(self):
        self.start_fake("--version", "none")
        self.admin("POST", "/admin/fail?count=1&code=502&retry_after=0")
        rc = self.upload(self.url())
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()
        stats = self.admin("GET", "/admin/stats")
        self.assertEqual(stats["puts"], 2)
        self.assertEqual(stats["bytes_received"], 2 * SIZE)
        self.assertEqual(self.progress()["bytes"], SIZE)


class ErrorsTest(UploadTestBase):
    def test_missing_share_url(self):
        rc = self.upload("x", ROBOVAST_SHARE_URL=None)
        self.assertEqual(rc, 1)
        self.assertEqual(self.err, "ERROR: ROBOVAST_SHARE_URL environment variable is not set\n")

    def test_missing_archive(self):
        rc = self.upload("http://127.0.0.1:9/s/" + TOKEN, VAST_ARCHIVE=str(self.dir / "nope.tar.gz"))
        self.assertEqual(rc, 1)
        self.assertIn("ERROR: archive not found: ", self.err)


@unittest.skipUnless(HAVE_WSGIDAV, "wsgidav/cheroot not installed (pip install wsgidav cheroot)")
class WsgidavTest(UploadTestBase):
    def start_wsgidav(self, password=""):
        self.port = self.spawn_server([sys.executable, "-c", WSGIDAV_SERVER, str(self.share), TOKEN,
                                       password, "{port_file}"])

    def test_single_put_fallback_with_empty_password(self):
        self.start_wsgidav()
        rc = self.upload(self.url())
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()
        self.assertEqual(self.state()["mode"], "single")
        self.assertEqual(self.progress(), {"bytes": SIZE, "total": SIZE, "resumed_from": 0})
        self.assertIn("uploaded (4.0 MiB)", self.out)

    def test_password_protected_share(self):
        self.start_wsgidav(password="share-pw")
        rc = self.upload(self.url())
        self.assertEqual(rc, 1)
        self.assertIn("ERROR: HTTP 401 uploading run-7.tar.gz to Nextcloud", self.err)
        rc = self.upload(self.url(), ROBOVAST_SHARE_PASSWORD="share-pw")
        self.assertEqual(rc, 0, self.err)
        self.assert_uploaded()


if __name__ == "__main__":
    unittest.main()
