"""Tests of src/pod/scripts/vastpod.py (the detached runner with status files)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VASTPOD = ROOT / "src" / "pod" / "scripts" / "vastpod.py"

PROGRESS_AND_RESULT = r"""
import json, os, time
p = os.environ["VAST_PROGRESS_FILE"]
for i in range(1, 4):
    with open(p + ".tmp", "w") as f:
        json.dump({"bytes": i * 10, "total": 30}, f)
    os.replace(p + ".tmp", p)
    time.sleep(0.4)
with open(os.environ["VAST_RESULT_FILE"], "w") as f:
    json.dump({"size": 123, "sha256": "ab"}, f)
print("all done")
"""


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


class RunnerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.state = str(self.dir / "archives" / ".vast" / "run-x.archive.json")
        self.to_kill = []

    def tearDown(self):
        for pid in self.to_kill:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.tmp.cleanup()

    def vastpod(self, *args, env=None, timeout=20):
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(VASTPOD)] + list(args), capture_output=True,
                              text=True, timeout=timeout, env=env)
        self.last_elapsed = time.monotonic() - started
        lines = [l for l in proc.stdout.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, "one JSON line expected: %r / %r" % (proc.stdout, proc.stderr))
        return proc.returncode, json.loads(lines[0]), proc

    def start(self, token, *command, env_dir=None, env=None):
        args = ["start", "--state", self.state, "--token", token]
        if env_dir:
            args += ["--env-dir", env_dir]
        return self.vastpod(*(args + ["--"] + list(command)), env=env)

    def status(self):
        rc, st, _ = self.vastpod("status", "--state", self.state)
        self.assertEqual(rc, 0)
        return st

    def wait_for(self, pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                self.fail("condition not reached; last status %r" % st)
            time.sleep(0.1)

    def wait_terminal(self):
        return self.wait_for(lambda s: s.get("state") in ("succeeded", "failed") and not s["alive"])

    # ------------------------------------------------------------------ tests
    def test_success_with_progress_and_result(self):
        rc, out, _ = self.start("tok-1", "python", "-c", PROGRESS_AND_RESULT)
        self.assertEqual((rc, out), (0, {"started": True, "running": True}))
        self.assertLess(self.last_elapsed, 5, "start must not wait for the command")
        running = self.wait_for(lambda s: s.get("state") == "running" and s.get("progress"))
        self.assertTrue(running["alive"])
        self.assertEqual(running["token"], "tok-1")
        self.assertIsInstance(running["pid"], int)
        self.assertEqual(running["command"][0], "python")
        # the daemon copies S.progress into S itself while the command runs
        deadline = time.monotonic() + 5
        while True:
            with open(self.state) as f:
                on_disk = json.load(f)
            if on_disk.get("progress") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertIn("bytes", on_disk.get("progress") or {})

        st = self.wait_terminal()
        self.assertEqual(st["state"], "succeeded")
        self.assertEqual(st["exit_code"], 0)
        self.assertEqual(st["progress"], {"bytes": 30, "total": 30})
        self.assertEqual(st["result"], {"size": 123, "sha256": "ab"})
        self.assertNotIn("error", st)
        self.assertGreaterEqual(st["finished_at"], st["started_at"])
        self.assertIn("all done", Path(self.state + ".log").read_text())

    def test_failure_records_exit_code_and_log_tail(self):
        cmd = "import sys; print('x' * 5000); sys.stderr.write('boom-marker\\n'); sys.exit(3)"
        rc, out, _ = self.start("tok-f", sys.executable, "-c", cmd)
        self.assertEqual(out, {"started": True, "running": True})
        st = self.wait_terminal()
        self.assertEqual(st["state"], "failed")
        self.assertEqual(st["exit_code"], 3)
        self.assertIn("boom-marker", st["error"])
        self.assertLessEqual(len(st["error"].encode()), 2000)
        self.assertIsNone(st["result"])

    def test_restart_clears_old_progress_and_result(self):
        self.start("tok-a", "python", "-c", PROGRESS_AND_RESULT)
        self.assertEqual(self.wait_terminal()["state"], "succeeded")
        rc, out, _ = self.start("tok-b", sys.executable, "-c", "import sys; sys.exit(1)")
        self.assertEqual(out["started"], True)
        st = self.wait_terminal()
        self.assertEqual((st["token"], st["state"]), ("tok-b", "failed"))
        self.assertIsNone(st["result"])
        self.assertIsNone(st["progress"])
        self.assertNotIn("all done", st["error"], "the error tail must be this run's output")

    def test_missing_program_fails(self):
        self.start("tok-m", "/nonexistent/program")
        st = self.wait_terminal()
        self.assertEqual((st["state"], st["exit_code"]), ("failed", 127))

    def test_python_falls_back_to_sys_executable(self):
        env = {"PATH": str(self.dir), "HOME": str(self.dir)}  # no python on PATH
        rc, out, _ = self.start("tok-p", "python", "-c", "print('hi')", env=env)
        self.assertEqual(out["started"], True)
        st = self.wait_terminal()
        self.assertEqual(st["state"], "succeeded", st)

    def test_start_while_running_then_stop(self):
        marker = self.dir / "child.pid"
        cmd = "import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(60)" % str(marker)
        rc, out, _ = self.start("tok-r", sys.executable, "-c", cmd)
        self.assertEqual(out, {"started": True, "running": True})
        rc, out, _ = self.start("tok-r2", sys.executable, "-c", "pass")
        self.assertEqual((rc, out), (0, {"started": False, "running": True}))
        st = self.status()
        self.assertEqual((st["state"], st["token"], st["alive"]), ("running", "tok-r", True))
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(marker.read_text())
        self.to_kill.append(child)

        rc, out, _ = self.vastpod("stop", "--state", self.state)
        self.assertEqual(rc, 0)
        self.assertTrue(out["stopped"])
        st = self.status()
        self.assertEqual(st["state"], "failed")
        self.assertEqual(st["exit_code"], -15)
        self.assertEqual(st["error"], "stopped")
        self.assertFalse(st["alive"])
        deadline = time.monotonic() + 5
        while pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(pid_alive(child), "the command must be stopped too")
        # stopping again is harmless
        rc, out, _ = self.vastpod("stop", "--state", self.state)
        self.assertTrue(out["stopped"])

    def test_kill9_of_daemon_reports_dead_runner(self):
        marker = self.dir / "child.pid"
        cmd = "import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(60)" % str(marker)
        self.start("tok-k", sys.executable, "-c", cmd)
        st = self.status()
        self.assertTrue(st["alive"])
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(marker.read_text())
        self.to_kill.append(child)
        os.kill(st["pid"], signal.SIGKILL)
        st = self.wait_for(lambda s: not s["alive"], timeout=5)
        self.assertEqual(st["state"], "running")
        self.assertEqual(st["token"], "tok-k")
        deadline = time.monotonic() + 5
        while pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(pid_alive(child), "the command must die with its runner")
        # a dead runner can be started again
        rc, out, _ = self.start("tok-k2", sys.executable, "-c", "pass")
        self.assertEqual(out, {"started": True, "running": True})
        st = self.wait_terminal()
        self.assertEqual((st["token"], st["state"]), ("tok-k2", "succeeded"))

    def test_env_dir_reaches_command_but_is_never_stored(self):
        secret = "s3cr3t-VALUE-0815"
        envd = self.dir / "secret"
        data = envd / "..2026_01_01"
        data.mkdir(parents=True)
        (data / "SHARE_PASSWORD").write_text(secret)
        os.symlink("..2026_01_01", envd / "..data")
        os.symlink("..data/SHARE_PASSWORD", envd / "SHARE_PASSWORD")
        (envd / ".hidden").write_text("nope")
        (envd / "PLAIN").write_text("plain-value")
        digest = hashlib.sha256(secret.encode()).hexdigest()  # the command must not name it
        cmd = ("import os, json, hashlib; json.dump({'ok': hashlib.sha256("
               "os.environ.get('SHARE_PASSWORD', '').encode()).hexdigest() == %r,"
               " 'plain': os.environ.get('PLAIN'), 'hidden': '.hidden' in os.environ,"
               " 'n': sum(1 for k in os.environ if k.startswith('..'))},"
               " open(os.environ['VAST_RESULT_FILE'], 'w'))" % digest)
        rc, out, proc = self.start("tok-e", sys.executable, "-c", cmd, env_dir=str(envd))
        self.assertEqual(out["started"], True)
        st = self.wait_terminal()
        self.assertEqual(st["state"], "succeeded", st)
        self.assertEqual(st["result"], {"ok": True, "plain": "plain-value", "hidden": False, "n": 0})
        for name in (self.state, self.state + ".log"):
            self.assertNotIn(secret, Path(name).read_text(), name)
        self.assertNotIn(secret, proc.stdout + proc.stderr)
        self.assertNotIn(secret, json.dumps(st))

    def test_status_absent_and_corrupt(self):
        st = self.status()
        self.assertEqual(st, {"state": "absent", "alive": False})
        os.makedirs(os.path.dirname(self.state))
        Path(self.state).write_text("{not json")
        st = self.status()
        self.assertEqual(st["state"], "corrupt")
        self.assertFalse(st["alive"])
        self.assertIn("error", st)


if __name__ == "__main__":
    unittest.main()
