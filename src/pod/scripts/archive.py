#!/usr/bin/env python3
"""Bucket -> tar.gz (pod side of vast).

    python archive.py BUCKET ARCHIVE_PATH

Environment: S3_ENDPOINT (default http://127.0.0.1:9000), S3_ACCESS_KEY, S3_SECRET_KEY
(default minioadmin), S3_REGION (default us-east-1), VAST_ARCHIVE_LEVEL (gzip level 0..9,
default 6), VAST_PROGRESS_FILE, VAST_RESULT_FILE.

Writes ARCHIVE_PATH.partial, then renames it to ARCHIVE_PATH (only a complete archive
ever has that name), then writes ARCHIVE_PATH.sha256 ("<hex>  <basename>\\n").
Members are `<BUCKET>/<key>`, in key order, streamed object by object (never a whole
object in memory). Exit 2 for refused keys, 1 for any other failure, with one
`ERROR: ...` line on stderr. Stdlib only (S3 through s3lite.py next to this script);
compresses with pigz when it is on PATH, else with the gzip module.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zlib  # noqa: F401 - gzip needs it; fail early when missing
import gzip

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # normally sys.path[0] already (python /opt/vast/scripts/archive.py)
    sys.path.append(_HERE)

import s3lite  # noqa: E402

CHUNK = 1024 * 1024
PROGRESS_INTERVAL = 0.5


class Fatal(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- helpers

def write_json_atomic(path, obj):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(path):
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def s3_error(op, exc):
    """One line naming the operation and the S3 error code, never the key."""
    if isinstance(exc, s3lite.S3Error):
        code = exc.code or "Unknown"
        if exc.status:
            return "S3 %s failed: %s (HTTP %d)" % (op, code, exc.status)
        if code == "ConnectionError":
            if "timeout" in exc.message.lower() or "timed out" in exc.message.lower():
                return "S3 %s failed: timeout talking to the S3 endpoint" % op
            return "S3 %s failed: cannot connect to the S3 endpoint %s" % (op, endpoint())
        return "S3 %s failed: %s" % (op, code)
    if isinstance(exc, TimeoutError):
        return "S3 %s failed: timeout talking to the S3 endpoint" % op
    return "S3 %s failed: %s" % (op, type(exc).__name__)


def check_key(key):
    if "\\" in key:
        return "contains a backslash"
    if key.startswith("/"):
        return "is absolute"
    if ".." in key.split("/"):
        return "has a '..' component"
    if "\0" in key:
        return "contains a NUL byte"
    return None


def parse_mc_attrs(value):
    """`atime:..#gid:..#mode:33261#mtime:1700000000#uid:..` -> (mode, mtime)."""
    mode = mtime = None
    for part in (value or "").split("#"):
        name, sep, v = part.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        try:
            if name == "mode":
                mode = int(v.strip()) & 0o7777
            elif name == "mtime":
                mtime = int(float(v.strip()))
        except ValueError:
            pass
    return mode, mtime


def mode_and_mtime(metadata, listed_mtime):
    md = {str(k).lower(): v for k, v in (metadata or {}).items()}
    mode, mtime = None, listed_mtime
    attrs = md.get("mc-attrs")
    if attrs:
        m, t = parse_mc_attrs(attrs)
        if m is not None:
            mode = m
        if t is not None:
            mtime = t
    if "mode" in md:
        try:
            mode = int(str(md["mode"]).strip(), 8) & 0o7777
        except ValueError:
            pass
    return (0o644 if mode is None else mode), mtime


class Progress:
    def __init__(self, path, total, total_objects):
        self.path = path
        self.lock = threading.Lock()
        self.state = {"bytes": 0, "total": total, "objects": 0,
                      "total_objects": total_objects, "written": 0}
        self.last = 0.0

    def add(self, key, n):
        with self.lock:
            self.state[key] += n
        self.maybe_write()

    def maybe_write(self, force=False):
        if not self.path:
            return
        now = time.monotonic()
        with self.lock:
            if not force and now - self.last < PROGRESS_INTERVAL:
                return
            self.last = now
            snapshot = dict(self.state)
            try:
                write_json_atomic(self.path, snapshot)
            except OSError:
                pass


class HashingWriter:
    """Writes to a file, counting and hashing what goes through."""

    def __init__(self, f, progress):
        self.f = f
        self.sha = hashlib.sha256()
        self.count = 0
        self.progress = progress

    def write(self, data):
        self.f.write(data)
        self.sha.update(data)
        self.count += len(data)
        self.progress.add("written", len(data))
        return len(data)

    def flush(self):
        self.f.flush()


class BodyReader:
    """File-like view of exactly `size` bytes of an object; fills every read. A body that
    breaks mid-way is re-opened with a ranged GetObject (If-Match the first ETag)."""

    RETRIES = 5

    def __init__(self, client, bucket, key, resp, size, progress):
        self.client = client
        self.bucket = bucket
        self.key = key
        self.body = resp
        self.etag = resp.etag
        self.size = size
        self.pos = 0
        self.progress = progress
        self.failures = 0
        self.skip = 0  # bytes to discard first (a re-fetch whose Range was ignored)

    def _reopen(self, exc):
        self.failures += 1
        if self.failures > self.RETRIES:
            raise Fatal(s3_error("GetObject (body)", exc))
        self.close()
        time.sleep(min(2 ** self.failures * 0.25, 5))
        try:
            resp = self.client.get_object(self.bucket, self.key, range_start=self.pos)
        except Exception as e:  # noqa: BLE001
            raise Fatal(s3_error("GetObject", e))
        self.body = resp
        # What If-Match would do: the rest must come from the same object version.
        if self.etag and resp.etag and resp.etag != self.etag:
            self.close()
            raise Fatal("object changed while it was being read (ETag %s, now %s);"
                        " is the bucket still being written?" % (self.etag[:80], resp.etag[:80]))
        self.skip = self.pos if resp.status != 206 else 0  # Range ignored: skip what we have

    def read(self, n=-1):
        left = self.size - self.pos
        if n is None or n < 0:
            n = left
        n = min(n, left)
        parts = []
        got = 0
        while got < n:
            try:
                while self.skip:
                    chunk = self.body.read(min(CHUNK, self.skip))
                    if not chunk:
                        raise s3lite.S3Error(0, "ReadError", "body ended before the range start")
                    self.skip -= len(chunk)
                chunk = self.body.read(min(CHUNK, n - got))
                if not chunk:  # http.client returns b"" when the connection closes early
                    raise s3lite.S3Error(0, "ReadError", "body ended before its Content-Length")
            except Exception as e:  # noqa: BLE001 - connection dropped mid-body
                self._reopen(e)
                continue
            parts.append(chunk)
            got += len(chunk)
            self.pos += len(chunk)
        if got:
            self.progress.add("bytes", got)
        return b"".join(parts)

    def at_eof(self):
        try:
            return not self.body.read(1)
        except Exception:  # noqa: BLE001
            return True

    def close(self):
        try:
            self.body.close()
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------------------- main work

def endpoint():
    return os.environ.get("S3_ENDPOINT") or "http://127.0.0.1:9000"


def make_client():
    env = dict(os.environ)
    env["S3_ENDPOINT"] = endpoint()
    try:
        return s3lite.from_env(env)
    except ValueError:
        raise Fatal("S3_ENDPOINT is not an http(s) URL")


def list_objects(client, bucket):
    objects = []
    try:
        for obj in client.list_objects(bucket):
            key = obj["Key"]
            if key.endswith("/"):
                continue
            why = check_key(key)
            if why:
                raise Fatal("refusing object key %r: it %s" % (key[:200], why), code=2)
            listed = obj.get("LastModified")
            objects.append((key, int(obj.get("Size") or 0), None if listed is None else int(listed)))
    except Fatal:
        raise
    except Exception as e:  # noqa: BLE001 - S3Error, malformed listing
        raise Fatal(s3_error("ListObjectsV2", e))
    objects.sort(key=lambda o: o[0])
    return objects


def write_tar(client, bucket, objects, sink, progress):
    """Writes the (uncompressed) tar stream of all objects to sink.write()."""
    tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK)
    try:
        for key, size, listed_mtime in objects:
            try:
                resp = client.get_object(bucket, key)
            except Exception as e:  # noqa: BLE001
                raise Fatal(s3_error("GetObject", e))
            reader = BodyReader(client, bucket, key, resp, size, progress)
            try:
                length = resp.size
                if length is not None and int(length) != size:
                    raise Fatal("object size changed since listing (%d bytes listed, GetObject has %d);"
                                " is the bucket still being written?" % (size, int(length)))
                if listed_mtime is None:
                    listed_mtime = int(resp.last_modified or 0)
                mode, mtime = mode_and_mtime(resp.metadata, listed_mtime)
                info = tarfile.TarInfo(name="%s/%s" % (bucket, key))
                info.type = tarfile.REGTYPE
                info.size = size
                info.mtime = max(0, int(mtime))
                info.mode = mode
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                try:
                    tar.addfile(info, reader)
                except OSError as e:
                    if e.errno is None:  # tarfile: "unexpected end of data"
                        raise Fatal("object body ended before its listed size")
                    raise
                if not reader.at_eof():
                    raise Fatal("object body longer than its listed size")
            finally:
                reader.close()
            progress.add("objects", 1)
    except BaseException:
        # do not write the end-of-archive blocks (or flush anything) of a failed archive
        tar.closed = True
        tar.fileobj.closed = True
        raise
    tar.close()


def build(bucket, archive_path):
    level = os.environ.get("VAST_ARCHIVE_LEVEL") or "6"
    try:
        level = int(level)
        if not 0 <= level <= 9:
            raise ValueError
    except ValueError:
        raise Fatal("VAST_ARCHIVE_LEVEL must be 0..9")

    client = make_client()
    objects = list_objects(client, bucket)
    total = sum(o[1] for o in objects)
    progress = Progress(os.environ.get("VAST_PROGRESS_FILE"), total, len(objects))
    progress.maybe_write(force=True)

    partial = archive_path + ".partial"
    parent = os.path.dirname(os.path.abspath(archive_path))
    os.makedirs(parent, exist_ok=True)
    out = open(partial, "wb")  # truncates
    ok = False
    try:
        writer = HashingWriter(out, progress)
        pigz = shutil.which("pigz")
        if pigz:
            compress_with_pigz(pigz, level, client, bucket, objects, writer, progress)
        else:
            gz = gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=writer, mtime=0)
            write_tar(client, bucket, objects, gz, progress)
            gz.close()
        out.flush()
        os.fsync(out.fileno())
        out.close()
        os.replace(partial, archive_path)
        fsync_dir(archive_path)
        ok = True
    finally:
        if not ok:
            try:
                out.close()
            except Exception:
                pass
            try:
                os.unlink(partial)
            except OSError:
                pass

    digest = writer.sha.hexdigest()
    sha_path = archive_path + ".sha256"
    tmp = sha_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s  %s\n" % (digest, os.path.basename(archive_path)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, sha_path)
    fsync_dir(sha_path)
    progress.maybe_write(force=True)
    result_path = os.environ.get("VAST_RESULT_FILE")
    if result_path:
        write_json_atomic(result_path, {"size": writer.count, "sha256": digest,
                                        "objects": len(objects), "bytes": total})
    return writer.count, digest, len(objects), total


def compress_with_pigz(pigz, level, client, bucket, objects, writer, progress):
    proc = subprocess.Popen([pigz, "-c", "-%d" % level], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    failure = []

    class PipeSink:
        def write(self, data):
            proc.stdin.write(data)
            return len(data)

        def flush(self):
            pass

    def produce():
        try:
            write_tar(client, bucket, objects, PipeSink(), progress)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failure.append(e)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    errbuf = []
    err_thread = threading.Thread(target=lambda: errbuf.append(proc.stderr.read()), daemon=True)
    err_thread.start()
    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            data = proc.stdout.read(CHUNK)
            if not data:
                break
            writer.write(data)
    except BaseException:
        proc.kill()
        raise
    finally:
        thread.join()
        rc = proc.wait()
        err_thread.join(5)
    if failure:
        e = failure[0]
        if isinstance(e, BrokenPipeError):
            raise Fatal("pigz exited early (exit code %s): %s"
                        % (rc, (b"".join(errbuf)).decode(errors="replace").strip()[:300]))
        raise e
    if rc != 0:
        raise Fatal("pigz failed (exit code %s): %s"
                    % (rc, (b"".join(errbuf)).decode(errors="replace").strip()[:300]))


def main(argv):
    if len(argv) != 2 or not argv[0] or not argv[1]:
        sys.stderr.write("usage: python archive.py BUCKET ARCHIVE_PATH\n")
        return 2
    bucket, archive_path = argv
    # SIGTERM (vastpod stop) unwinds normally, so the .partial file is removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        size, digest, n, total = build(bucket, archive_path)
    except Fatal as e:
        sys.stderr.write("ERROR: %s\n" % e)
        return e.code
    except KeyboardInterrupt:
        sys.stderr.write("ERROR: interrupted\n")
        return 1
    except OSError as e:
        sys.stderr.write("ERROR: %s: %s\n" % (type(e).__name__, e.strerror or e))
        return 1
    except Exception as e:  # noqa: BLE001
        if isinstance(e, s3lite.S3Error):
            msg = s3_error("request", e)
        else:
            msg = "%s: %s" % (type(e).__name__, e)
        sys.stderr.write("ERROR: %s\n" % msg)
        return 1
    sys.stdout.write("archived %d objects (%d bytes) into %s (%d bytes, sha256 %s)\n"
                     % (n, total, os.path.basename(archive_path), size, digest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
