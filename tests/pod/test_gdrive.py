"""upload_gdrive.py against tests/fixtures/fake_gdrive.py (a fake Drive + token endpoint).

    python3 -m unittest discover -s tests/pod -v

Needs `cryptography` (a throwaway service-account key is generated). The script signs with
the stdlib rs256.py; the google-auth and cryptography fallbacks are tested with rs256 blocked.
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
except ImportError:  # pragma: no cover
    rsa = None

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "src" / "pod" / "scripts" / "upload_gdrive.py"
FAKE = REPO / "tests" / "fixtures" / "fake_gdrive.py"
CHUNK = 262144 * 2
MIB = 1024 * 1024
FOLDER = "1AbC_folder-XYZ09"
RUN_TIMEOUT = 40

# Runs the script with some modules made unimportable (sys.modules[name] = None).
BLOCKING_WRAPPER = (
    "import runpy, sys\n"
    "for m in sys.argv[1].split(','):\n"
    "    sys.modules[m] = None\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def load_script_module():
    spec = importlib.util.spec_from_file_location("upload_gdrive", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def new_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, pub


@unittest.skipIf(rsa is None, "needs the python package cryptography")
class GDriveUploadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pem, cls.pub = new_key()

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="vast-gdrive-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.root = self.tmp / "drive"
        self.data = self.tmp / "data"
        self.data.mkdir()
        (self.tmp / "sa.pub").write_bytes(self.pub)
        port_file = self.tmp / "port"
        self.fake_log = open(self.tmp / "fake.log", "wb")
        self.addCleanup(self.fake_log.close)
        self.fake = subprocess.Popen(
            [sys.executable, str(FAKE), "--root", str(self.root), "--port-file", str(port_file),
             "--verify-key", str(self.tmp / "sa.pub")],
            stdout=self.fake_log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_fake)
        port = wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 10,
                        "the fake's port")
        self.base = "http://127.0.0.1:%s" % port
        self.sa_json = json.dumps({
            "type": "service_account", "project_id": "vast-test", "private_key_id": "k1",
            "private_key": self.pem, "client_email": "uploader@vast-test.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": self.base + "/token"})
        self.outputs = []
        self.procs = []

    def stop_fake(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.fake.kill()
        self.fake.wait()

    def tearDown(self):
        self.assert_no_secrets()

    # ---- helpers

    def admin(self, method, path, body=None):
        req = urllib.request.Request(self.base + path, data=body, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def stats(self):
        return self.admin("GET", "/admin/stats")

    def archive(self, run, size):
        path = self.data / ("%s.tar.gz" % run)
        data = os.urandom(size)
        path.write_bytes(data)
        return path, data

    def env(self, run, **over):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("VAST_", "GDRIVE_", "ROBOVAST_"))}
        env.update({
            "VAST_ARCHIVE": str(self.data / ("%s.tar.gz" % run)),
            "GDRIVE_SA_JSON": self.sa_json,
            "ROBOVAST_SHARE_URL": "https://drive.google.com/drive/folders/%s?usp=sharing" % FOLDER,
            "GDRIVE_API_BASE": self.base,
            "VAST_PROGRESS_FILE": str(self.data / ("%s.progress" % run)),
            "VAST_RESULT_FILE": str(self.data / ("%s.result" % run)),
            "VAST_CHUNK_SIZE": str(CHUNK),
            "VAST_HTTP_TIMEOUT": "10",
        })
        for k, v in over.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def argv(self, run, block=None):
        if block:
            return [sys.executable, "-c", BLOCKING_WRAPPER, block, str(SCRIPT), run]
        return [sys.executable, str(SCRIPT), run]

    def run_script(self, run, block=None, **over):
        p = subprocess.run(self.argv(run, block), env=self.env(run, **over),
                           capture_output=True, timeout=RUN_TIMEOUT)
        out, err = p.stdout.decode("utf-8"), p.stderr.decode("utf-8")
        self.outputs += [out, err]
        return p.returncode, out, err

    def start_script(self, run, **over):
        n = len(self.procs)
        fo = open(self.tmp / ("out%d" % n), "wb")
        fe = open(self.tmp / ("err%d" % n), "wb")
        self.addCleanup(fo.close)
        self.addCleanup(fe.close)
        p = subprocess.Popen(self.argv(run), env=self.env(run, **over), stdout=fo, stderr=fe)
        p.out_path, p.err_path = fo.name, fe.name
        self.procs.append(p)
        return p

    def finish_script(self, p):
        rc = p.wait(timeout=RUN_TIMEOUT)
        out = Path(p.out_path).read_text("utf-8")
        err = Path(p.err_path).read_text("utf-8")
        self.outputs += [out, err]
        return rc, out, err

    def kill_after_chunks(self, run, chunks):
        """Starts the upload slowly and SIGKILLs it after `chunks` chunk PUTs."""
        self.admin("POST", "/admin/config?delay=0.1")
        p = self.start_script(run)
        wait_for(lambda: self.stats()["chunk_puts"] >= chunks or p.poll() is not None, 20,
                 "%d chunk PUTs" % chunks)
        p.send_signal(signal.SIGKILL)
        self.finish_script(p)
        self.admin("POST", "/admin/config?delay=0")
        return p

    def uploaded(self, name):
        return [f for f in self.admin("GET", "/admin/files") if f["name"] == name]

    def assert_uploaded(self, name, data):
        files = self.uploaded(name)
        self.assertEqual(len(files), 1, files)
        self.assertEqual(files[0]["size"], len(data))
        self.assertEqual(files[0]["sha256"], sha256(data))
        self.assertEqual(files[0]["parents"], [FOLDER])
        self.assertEqual(files[0]["mimeType"], "application/gzip")
        self.assertEqual(sha256((self.root / name).read_bytes()), sha256(data))
        return files[0]

    def state_path(self, run):
        return self.data / ("%s.tar.gz.gdrive.json" % run)

    def assert_no_secrets(self):
        if self.fake.poll() is not None:
            return
        secrets = self.admin("GET", "/admin/secrets")
        needles = list(secrets["tokens"]) + list(secrets["assertions"])
        # the private key's base64 lines
        needles += [line for line in self.pem.splitlines() if len(line) > 40]
        texts = [("output", t) for t in self.outputs]
        for p in self.data.iterdir():
            if p.suffix == ".gz" and not p.name.endswith(".gdrive.json"):
                continue
            texts.append((p.name, p.read_bytes().decode("utf-8", "replace")))
        for name, text in texts:
            for n in needles:
                self.assertNotIn(n, text, "a secret in %s" % name)
            if not name.endswith(".gdrive.json"):
                self.assertNotIn("upload_id=", text, "the session URI in %s" % name)

    # ---- tests

    def test_happy_path(self):
        run = "run-happy"
        _, data = self.archive(run, 3 * MIB + 12345)
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "")
        meta = self.assert_uploaded(run + ".tar.gz", data)
        self.assertTrue(out.startswith("%s  uploading to Google Drive...\n" % run), out)
        self.assertTrue(out.endswith("\r%s  uploaded (3.0 MiB)  \u2713\033[K\n" % run), out)
        bars = re.findall(r"\r%s  \[([\u2588\u2591]{20})\]  ([ \d]{2}\d\.\d)%%  (\d+\.\d) MiB/3\.0 MiB"
                          r"  \d+(?:\.\d)? (?:MiB|KiB|B)/s\033\[K" % run, out)
        self.assertGreaterEqual(len(bars), 3, out)
        self.assertEqual(bars[-1][0], "\u2588" * 20)
        self.assertEqual(bars[-1][1], "100.0")
        self.assertEqual(bars[0][0], "\u2591" * 20)
        pcts = [float(b[1]) for b in bars]
        self.assertEqual(pcts, sorted(pcts))
        st = self.stats()
        n_chunks = -(-len(data) // CHUNK)
        self.assertEqual((st["sessions"], st["chunk_puts"], st["bytes_received"], st["queries"]),
                         (1, n_chunks, len(data), 0))
        self.assertEqual(st["tokens_issued"], 1)
        self.assertFalse(self.state_path(run).exists())
        self.assertEqual(json.loads((self.data / (run + ".progress")).read_text()),
                         {"bytes": len(data), "total": len(data), "resumed_from": 0})
        self.assertEqual(json.loads((self.data / (run + ".result")).read_text()),
                         {"file_id": meta["id"], "name": run + ".tar.gz", "size": len(data),
                          "already_uploaded": False})

    def test_resume_after_sigkill_resends_at_most_one_chunk(self):
        run = "run-resume"
        path, data = self.archive(run, 6 * MIB)
        self.kill_after_chunks(run, 7)
        state = json.loads(self.state_path(run).read_text())
        self.assertEqual(set(state), {"session_uri", "size", "mtime", "name", "folder",
                                      "created_at"})
        self.assertIn("upload_id=", state["session_uri"])
        self.assertEqual((state["size"], state["name"], state["folder"]),
                         (len(data), run + ".tar.gz", FOLDER))
        self.assertEqual(os.stat(self.state_path(run)).st_mode & 0o777, 0o600)
        progress = json.loads((self.data / (run + ".progress")).read_text())
        self.assertGreater(progress["bytes"], 0)
        self.assertLess(progress["bytes"], len(data))
        self.assertEqual(self.uploaded(run + ".tar.gz"), [])
        self.assert_no_secrets()

        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(re.findall(r"%s  resuming at \d+\.\d MiB\n" % run, out)), 1, out)
        self.assert_uploaded(run + ".tar.gz", data)
        st = self.stats()
        self.assertEqual(st["sessions"], 1)
        self.assertGreaterEqual(st["queries"], 1)
        self.assertLessEqual(st["bytes_received"], len(data) + CHUNK)
        self.assertFalse(self.state_path(run).exists())
        progress = json.loads((self.data / (run + ".progress")).read_text())
        self.assertEqual(progress["bytes"], len(data))
        self.assertGreater(progress["resumed_from"], 0)

    def test_session_expired_during_upload_starts_over(self):
        run = "run-expire"
        _, data = self.archive(run, 4 * MIB)
        self.admin("POST", "/admin/config?delay=0.1")
        p = self.start_script(run)
        wait_for(lambda: self.stats()["chunk_puts"] >= 3, 20, "3 chunk PUTs")
        self.admin("POST", "/admin/expire")
        self.admin("POST", "/admin/config?delay=0")
        rc, out, err = self.finish_script(p)
        self.assertEqual(rc, 0, err)
        self.assertIn("session expired", err)
        self.assert_uploaded(run + ".tar.gz", data)
        st = self.stats()
        self.assertEqual((st["sessions"], st["completed"]), (2, 1))
        self.assertGreater(st["bytes_received"], len(data))

    def test_saved_session_expired_starts_over(self):
        run = "run-expired-state"
        _, data = self.archive(run, 3 * MIB)
        self.kill_after_chunks(run, 2)
        self.assertTrue(self.state_path(run).exists())
        self.admin("POST", "/admin/expire")
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("resuming at", out)
        self.assert_uploaded(run + ".tar.gz", data)
        self.assertEqual(self.stats()["sessions"], 2)

    def test_changed_archive_discards_saved_session(self):
        run = "run-changed"
        path, _ = self.archive(run, 3 * MIB)
        self.kill_after_chunks(run, 2)
        self.assertTrue(self.state_path(run).exists())
        _, data = self.archive(run, 3 * MIB)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10 ** 9))
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("resuming at", out)
        self.assert_uploaded(run + ".tar.gz", data)
        self.assertEqual(self.stats()["sessions"], 2)

    def test_completed_session_in_state_is_success(self):
        # The upload finished after the last state write: the status query says complete.
        run = "run-completed"
        path, data = self.archive(run, 2 * MIB)
        self.kill_after_chunks(run, 1)
        session = json.loads(self.state_path(run).read_text())["session_uri"]
        token = self.admin("GET", "/admin/secrets")["tokens"][-1]
        offset = 0
        while True:
            req = urllib.request.Request(session, method="PUT", data=b"", headers={
                "Authorization": "Bearer " + token, "Content-Range": "bytes */%d" % len(data)})
            try:
                urllib.request.urlopen(req, timeout=10)
                self.fail("not complete yet, expected 308")
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, 308)
                offset = int(e.headers["Range"].split("-")[1]) + 1 if e.headers["Range"] else 0
                break
        req = urllib.request.Request(session, method="PUT", data=data[offset:], headers={
            "Authorization": "Bearer " + token,
            "Content-Range": "bytes %d-%d/%d" % (offset, len(data) - 1, len(data))})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
        before = self.stats()
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)
        after = self.stats()
        self.assertEqual(after["chunk_puts"], before["chunk_puts"])
        self.assertEqual(after["sessions"], 1)
        self.assertFalse(self.state_path(run).exists())
        progress = json.loads((self.data / (run + ".progress")).read_text())
        self.assertEqual(progress, {"bytes": len(data), "total": len(data),
                                    "resumed_from": len(data)})

    def test_transient_failures_are_retried_with_backoff(self):
        run = "run-retry"
        _, data = self.archive(run, 2 * MIB)
        self.admin("POST", "/admin/fail?count=1&code=503")
        self.admin("POST", "/admin/drop?count=1")
        self.admin("POST", "/admin/fail?count=1&code=429&retry_after=0")
        t0 = time.monotonic()
        rc, out, err = self.run_script(run)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)
        self.assertIn("HTTP 503; retrying in 1 s (1/10)", err)
        self.assertIn("retrying in 2 s (2/10)", err)
        self.assertIn("HTTP 429; retrying in 0 s (3/10)", err)
        self.assertGreaterEqual(elapsed, 3.0)  # 1 s + 2 s backoff; Retry-After: 0 honoured
        st = self.stats()
        self.assertEqual(st["chunk_puts"], 4 + 3)
        self.assertEqual(st["sessions"], 1)
        self.assertEqual(st["bytes_received"], len(data) + 3 * CHUNK)

    def test_gives_up_after_ten_consecutive_failures_then_resumes(self):
        run = "run-giveup"
        _, data = self.archive(run, 1 * MIB)
        self.admin("POST", "/admin/fail?count=10&code=503&retry_after=0")
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 1)
        self.assertIn("ERROR: Google Drive upload failed 10 times in a row (last: HTTP 503)\n",
                      err)
        self.assertEqual(self.stats()["chunk_puts"], 10)
        self.assertTrue(self.state_path(run).exists())
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)
        self.assertEqual(self.stats()["sessions"], 1)

    def test_token_refreshed_on_401(self):
        run = "run-401"
        _, data = self.archive(run, 3 * MIB)
        self.admin("POST", "/admin/config?delay=0.1")
        p = self.start_script(run)
        wait_for(lambda: self.stats()["chunk_puts"] >= 2, 20, "2 chunk PUTs")
        self.admin("POST", "/admin/revoke")
        self.admin("POST", "/admin/config?delay=0")
        rc, out, err = self.finish_script(p)
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)
        st = self.stats()
        self.assertEqual(st["tokens_issued"], 2)
        self.assertGreaterEqual(st["unauthorized"], 1)

    def test_token_refreshed_before_expiry(self):
        run = "run-expiry"
        _, data = self.archive(run, 3 * MIB)
        self.admin("POST", "/admin/config?expires_in=2&delay=0.25")
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)
        st = self.stats()
        self.assertGreaterEqual(st["tokens_issued"], 2)
        self.assertEqual(st["unauthorized"], 0)

    def test_server_keeping_less_than_sent(self):
        run = "run-truncate"
        _, data = self.archive(run, 2 * MIB + 1000)
        self.admin("POST", "/admin/truncate?keep=100000")
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)
        self.assertEqual(self.stats()["bytes_received"], len(data) + CHUNK - 100000)

    def test_duplicate_of_same_size_is_success_without_sending(self):
        run = "run-dup"
        path, data = self.archive(run, 1 * MIB + 7)
        put = self.admin("POST", "/admin/put?name=%s.tar.gz&parent=%s" % (run, FOLDER),
                         os.urandom(len(data)))
        # a stale state file whose session is gone (404): the listing then finds the file
        st = os.stat(path)
        self.state_path(run).write_text(json.dumps({
            "session_uri": self.base + "/upload/drive/v3/files?uploadType=resumable&upload_id=x",
            "size": len(data), "mtime": st.st_mtime, "name": run + ".tar.gz",
            "folder": FOLDER, "created_at": time.time()}))
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 0, err)
        self.assertIn("already in the target Google Drive folder", out)
        self.assertTrue(out.endswith("\r%s  uploaded (1.0 MiB)  \u2713\033[K\n" % run), out)
        stt = self.stats()
        self.assertEqual((stt["sessions"], stt["chunk_puts"], stt["bytes_received"]), (0, 0, 0))
        self.assertFalse(self.state_path(run).exists())
        result = json.loads((self.data / (run + ".result")).read_text())
        self.assertEqual((result["file_id"], result["already_uploaded"]), (put["id"], True))

    def test_duplicate_of_other_size_fails(self):
        run = "run-dup2"
        _, data = self.archive(run, 1 * MIB)
        put = self.admin("POST", "/admin/put?name=%s.tar.gz&parent=%s" % (run, FOLDER),
                         os.urandom(len(data) - 1))
        rc, out, err = self.run_script(run)
        self.assertEqual(rc, 1)
        self.assertEqual(err, "ERROR: %s.tar.gz already exists in the target Google Drive "
                              "folder (file id: %s).\n" % (run, put["id"]))
        st = self.stats()
        self.assertEqual((st["sessions"], st["chunk_puts"]), (0, 0))

    def test_same_name_in_other_folder_and_bare_folder_id(self):
        run = "run-other"
        _, data = self.archive(run, 1 * MIB)
        self.admin("POST", "/admin/put?name=%s.tar.gz&parent=elsewhere" % run, b"x")
        rc, out, err = self.run_script(run, ROBOVAST_SHARE_URL="  %s \n" % FOLDER)
        self.assertEqual(rc, 0, err)
        files = [f for f in self.uploaded(run + ".tar.gz") if f["parents"] == [FOLDER]]
        self.assertEqual(len(files), 1)
        self.assertEqual(files[0]["sha256"], sha256(data))

    def test_bad_chunk_size_exits_2(self):
        run = "run-chunk"
        self.archive(run, 1000)
        for value in ("100000", "262145", "0", "-262144", "abc"):
            with self.subTest(value=value):
                rc, out, err = self.run_script(run, VAST_CHUNK_SIZE=value)
                self.assertEqual(rc, 2, err)
                self.assertTrue(err.startswith("ERROR: VAST_CHUNK_SIZE "), err)
        self.assertEqual(self.stats()["tokens_issued"], 0)

    def test_missing_environment(self):
        run = "run-env"
        self.archive(run, 1000)
        for var in ("GDRIVE_SA_JSON", "ROBOVAST_SHARE_URL"):
            with self.subTest(var=var):
                rc, out, err = self.run_script(run, **{var: None})
                self.assertEqual(rc, 1)
                self.assertEqual(err, "ERROR: %s environment variable is not set\n" % var)
        rc, out, err = self.run_script(run, VAST_ARCHIVE=str(self.data / "nope.tar.gz"))
        self.assertEqual(rc, 1)
        self.assertIn("ERROR: archive not found: ", err)

    def test_default_paths_from_run_id(self):
        # Without VAST_ARCHIVE the archive is /data/<RUN_ID>.tar.gz (not there in tests).
        rc, out, err = self.run_script("run-default", VAST_ARCHIVE=None)
        self.assertEqual(rc, 1)
        self.assertEqual(err, "ERROR: archive not found: /data/run-default.tar.gz\n")

    def test_stdlib_signer_without_google_auth_or_cryptography(self):
        run = "run-stdlib"
        _, data = self.archive(run, 1 * MIB)
        rc, out, err = self.run_script(run, block="google,cryptography")
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)

    @unittest.skipIf(importlib.util.find_spec("google") is None
                     or importlib.util.find_spec("google.auth") is None, "needs google-auth")
    def test_google_auth_fallback_signer(self):
        run = "run-gauth"
        _, data = self.archive(run, 1 * MIB)
        rc, out, err = self.run_script(run, block="rs256")
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)

    def test_cryptography_fallback_signer(self):
        run = "run-crypto"
        _, data = self.archive(run, 1 * MIB)
        rc, out, err = self.run_script(run, block="rs256,google")
        self.assertEqual(rc, 0, err)
        self.assert_uploaded(run + ".tar.gz", data)

    def test_no_signer_available(self):
        run = "run-nosigner"
        self.archive(run, 1000)
        rc, out, err = self.run_script(run, block="rs256,google,cryptography")
        self.assertEqual(rc, 1)
        self.assertIn("needs rs256.py next to this script, or the python package google-auth "
                      "or cryptography", err)

    def test_unreadable_key_is_rejected_cleanly(self):
        run = "run-badkey"
        self.archive(run, 1000)
        sa = json.loads(self.sa_json)
        sa["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        rc, out, err = self.run_script(run, GDRIVE_SA_JSON=json.dumps(sa))
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"^ERROR: cannot load the private key of GDRIVE_SA_JSON "
                              r"\(ValueError: [^\n]+\)\n$")

    def test_wrong_key_is_rejected_cleanly(self):
        run = "run-wrongkey"
        self.archive(run, 1000)
        other_pem, _ = new_key()
        sa = json.loads(self.sa_json)
        sa["private_key"] = other_pem
        rc, out, err = self.run_script(run, GDRIVE_SA_JSON=json.dumps(sa))
        self.assertEqual(rc, 1)
        self.assertEqual(err, "ERROR: the Google token endpoint refused the service account "
                              "(HTTP 400): invalid_grant: Invalid JWT Signature.\n")
        for line in other_pem.splitlines()[1:-1]:
            self.assertNotIn(line, out + err)


class HelperTest(unittest.TestCase):
    def setUp(self):
        self.mod = load_script_module()

    def test_rate_format(self):
        f = self.mod.fmt_rate
        self.assertEqual([f(0), f(1023), f(2048), f(3.25 * MIB)],
                         ["0 B/s", "1023 B/s", "2.0 KiB/s", "3.2 MiB/s"])

    def test_folder_id(self):
        f = self.mod.folder_id_of
        self.assertEqual(f("https://drive.google.com/drive/folders/1a_B-c?usp=sharing"), "1a_B-c")
        self.assertEqual(f("https://drive.google.com/drive/u/0/folders/XyZ"), "XyZ")
        self.assertEqual(f("  1a_B-c\n"), "1a_B-c")

    def test_query_quoting(self):
        self.assertEqual(self.mod.q_quote("it's a\\b"), "'it\\'s a\\\\b'")


if __name__ == "__main__":
    unittest.main()
