#!/usr/bin/env python3
"""Detached runner with status files (pod side of vast).

    python vastpod.py start  --state S --token T [--env-dir D] -- CMD ARGS...
    python vastpod.py status --state S
    python vastpod.py stop   --state S

Files next to S: S.lock (flock held by the daemon while CMD runs), S.log (stdout and
stderr of the daemon and of CMD, appended), S.progress and S.result (written by CMD
through VAST_PROGRESS_FILE / VAST_RESULT_FILE).

Every path comes from argv (paths inside files are not rewritten by the simulated
cluster). Environment values (e.g. secrets from --env-dir) are never printed or stored.
Stdlib only.
"""

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

POLL_INTERVAL = 0.5
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
ERROR_TAIL = 2000
TERMINAL = ("succeeded", "failed")


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- files

def write_json_atomic(path, obj):
    """tmp + fsync + rename + fsync(dir)."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    data = (json.dumps(obj, sort_keys=True) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_json(path):
    """(value, error): (None, None) when missing, (None, msg) when unparseable."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, "cannot read: %s" % e.strerror
    try:
        return json.loads(raw.decode("utf-8")), None
    except ValueError as e:
        return None, "invalid JSON: %s" % e


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def lock_is_held(lock_path):
    """True iff someone holds an flock on lock_path."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def log_tail(log_path, start_offset):
    """Last ERROR_TAIL bytes of the log written since start_offset."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            begin = max(start_offset, end - ERROR_TAIL, 0)
            f.seek(begin)
            return f.read(end - begin).decode("utf-8", errors="replace")
    except OSError:
        return ""


def load_env_dir(env_dir):
    """Every regular file of env_dir (following symlinks, skipping dot names such as
    Kubernetes' ..data) as NAME=content."""
    env = {}
    if not env_dir:
        return env
    for name in sorted(os.listdir(env_dir)):
        if name.startswith(".") or "=" in name or "\0" in name:
            continue
        path = os.path.join(env_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            env[name] = os.fsdecode(f.read().replace(b"\0", b""))
    return env


# ---------------------------------------------------------------------------- daemon

def set_pdeathsig():
    """Best effort: CMD dies with the daemon (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_daemon(state_path, token, env_dir, command, lock_fd):
    """Runs in the detached grandchild; never returns."""
    code = 1
    try:
        code = _daemon(state_path, token, env_dir, command, lock_fd)
    except BaseException as e:  # noqa: BLE001 - last resort, logged
        try:
            sys.stderr.write("vastpod: daemon error: %s: %s\n" % (type(e).__name__, e))
            sys.stderr.flush()
        except Exception:
            pass
    finally:
        os._exit(code)


def _daemon(state_path, token, env_dir, command, lock_fd):
    # The lock was taken by the `start` invocation on an open file description that this
    # process inherited: taking it again is a no-op, and there was no window for a race.
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # lost a race: somebody else runs; exit quietly

    progress_path = state_path + ".progress"
    result_path = state_path + ".result"
    log_path = state_path + ".log"
    remove(progress_path)
    remove(result_path)

    stop = {"requested": False, "child": None}

    def on_term(signum, _frame):
        stop["requested"] = True
        child = stop["child"]
        if child is not None and child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except OSError:
                pass

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, on_term)

    state = {
        "state": "running",
        "token": token,
        "pid": os.getpid(),
        "started_at": time.time(),
        "command": list(command),
    }
    write_json_atomic(state_path, state)

    argv = list(command)
    if argv and argv[0] == "python" and shutil.which("python") is None:
        argv[0] = sys.executable

    env = dict(os.environ)
    env["VAST_PROGRESS_FILE"] = progress_path
    env["VAST_RESULT_FILE"] = result_path
    exit_code = None
    error = None
    try:
        env.update(load_env_dir(env_dir))
    except OSError as e:
        exit_code, error = 126, "cannot read env dir: %s" % (e.strerror or e)

    sys.stdout.write("vastpod: %s start %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), json.dumps(argv)))
    sys.stdout.flush()
    log_start = os.lseek(1, 0, os.SEEK_END)  # the error tail is this run's output only

    child = None
    if exit_code is None and not stop["requested"]:
        try:
            child = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=1, stderr=2,
                start_new_session=True, close_fds=True, preexec_fn=set_pdeathsig)
        except OSError as e:
            exit_code = 127 if e.errno == errno.ENOENT else 126
            error = "cannot start %s: %s" % (argv[0] if argv else "''", e.strerror or e)
            sys.stderr.write("vastpod: %s\n" % error)
            sys.stderr.flush()
    stop["child"] = child
    if child is not None and stop["requested"]:
        on_term(signal.SIGTERM, None)

    last_progress = None
    kill_deadline = None
    while child is not None:
        try:
            rc = child.wait(timeout=POLL_INTERVAL)
        except subprocess.TimeoutExpired:
            rc = None
        progress, _ = read_json(progress_path)
        if progress is not None and progress != last_progress:
            last_progress = progress
            state["progress"] = progress
            write_json_atomic(state_path, state)
        if rc is not None:
            exit_code = rc
            break
        if stop["requested"]:
            if kill_deadline is None:
                kill_deadline = time.monotonic() + STOP_TIMEOUT
            elif time.monotonic() > kill_deadline:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except OSError:
                    pass

    progress, _ = read_json(progress_path)
    if progress is None:
        progress = last_progress
    result, _ = read_json(result_path)
    if stop["requested"]:
        exit_code, error = -15, "stopped"
    state.update({
        "state": "succeeded" if exit_code == 0 else "failed",
        "exit_code": exit_code,
        "finished_at": time.time(),
        "progress": progress,
        "result": result,
    })
    if exit_code != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        state["error"] = error if error is not None else log_tail(log_path, log_start)
    sys.stdout.write("vastpod: %s finished: %s (exit code %s)\n"
                     % (time.strftime("%Y-%m-%dT%H:%M:%S"), state["state"], exit_code))
    sys.stdout.flush()
    write_json_atomic(state_path, state)
    return 0


# ---------------------------------------------------------------------------- commands

def cmd_start(state_path, token, env_dir, command):
    if not command:
        emit({"started": False, "running": False, "error": "no command given"})
        return 1
    parent = os.path.dirname(os.path.abspath(state_path))
    os.makedirs(parent, exist_ok=True)
    lock_path = state_path + ".lock"
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(lock_fd)
            emit({"started": False, "running": True})
            return 0
        raise
    log_path = state_path + ".log"
    sys.stdout.flush()
    sys.stderr.flush()

    pid = os.fork()
    if pid == 0:  # first child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            # daemon (grandchild)
            devnull = os.open(os.devnull, os.O_RDONLY)
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(devnull, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(devnull)
            os.close(log_fd)
            sys.stdin = open(os.devnull)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
        except BaseException:
            os._exit(1)
        run_daemon(state_path, token, env_dir, command, lock_fd)
        os._exit(1)

    # parent: the daemon holds the lock now (same open file description)
    os.close(lock_fd)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        st, _ = read_json(state_path)
        if isinstance(st, dict) and st.get("token") == token and (
                st.get("state") == "running" or st.get("state") in TERMINAL):
            emit({"started": True, "running": True})
            return 0
        if time.monotonic() > deadline:
            emit({"started": False, "running": False,
                  "error": "the runner did not start within %d s (see %s)" % (START_TIMEOUT, log_path)})
            return 1
        time.sleep(0.05)


def current_status(state_path):
    st, err = read_json(state_path)
    if err is not None:
        out = {"state": "corrupt", "error": err}
    elif not isinstance(st, dict):
        out = {"state": "absent"} if st is None else {"state": "corrupt", "error": "not a JSON object"}
    else:
        out = st
        live, _ = read_json(state_path + ".progress")
        if live is not None:
            out["progress"] = live
    out["alive"] = lock_is_held(state_path + ".lock")
    return out


def cmd_status(state_path):
    emit(current_status(state_path))
    return 0


def pid_is_runner(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"vastpod" in f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the lock


def cmd_stop(state_path):
    lock_path = state_path + ".lock"
    was_alive = lock_is_held(lock_path)
    deadline = time.monotonic() + STOP_TIMEOUT
    signalled = None
    while lock_is_held(lock_path) and time.monotonic() < deadline:
        st, _ = read_json(state_path)
        pid = st.get("pid") if isinstance(st, dict) else None
        if (isinstance(pid, int) and pid > 1 and pid != signalled
                and st.get("state") == "running" and pid_is_runner(pid)):
            try:
                os.kill(pid, signal.SIGTERM)
                signalled = pid
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    alive = lock_is_held(lock_path)
    emit({"stopped": not alive, "was_running": was_alive})
    return 0


def usage():
    sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
    return 2


def main(argv):
    if not argv:
        return usage()
    sub, rest = argv[0], argv[1:]
    command = []
    if "--" in rest:
        i = rest.index("--")
        rest, command = rest[:i], rest[i + 1:]
    opts = {}
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in ("--state", "--token", "--env-dir") and i + 1 < len(rest):
            opts[a[2:]] = rest[i + 1]
            i += 2
        elif a.startswith(("--state=", "--token=", "--env-dir=")):
            k, v = a[2:].split("=", 1)
            opts[k] = v
            i += 1
        else:
            sys.stderr.write("vastpod: unexpected argument %r\n" % a)
            return 2
    if "state" not in opts:
        return usage()
    state_path = opts["state"]
    if sub == "start":
        if "token" not in opts:
            return usage()
        return cmd_start(state_path, opts["token"], opts.get("env-dir"), command)
    if sub == "status":
        return cmd_status(state_path)
    if sub == "stop":
        return cmd_stop(state_path)
    return usage()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
