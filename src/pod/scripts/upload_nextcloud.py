#!/usr/bin/env python3
"""Upload a run archive to a Nextcloud public share (pod side of vast; stdlib only).

    python upload_nextcloud.py RUN_ID

Environment: ROBOVAST_SHARE_URL (required), ROBOVAST_SHARE_PASSWORD, VAST_ARCHIVE
(default /data/<RUN_ID>.tar.gz), VAST_PROGRESS_FILE, VAST_STATE_FILE (default
VAST_ARCHIVE + ".nextcloud.json"), VAST_CHUNK_SIZE (default 10 MiB), VAST_HTTP_TIMEOUT
(default 300 s).

Nextcloud >= 32 (GET <base>/status.php): resumable chunked upload v2 on the public
endpoint (MKCOL <base>/public.php/dav/uploads/<token>/<id>, PUT chunks 00001.., MOVE
.file). Otherwise (or when chunked uploads are refused): one PUT to the legacy
<base>/public.php/webdav/<file>, as upstream RoboVAST did. Every request is retried on
connection errors, timeouts, 429 and 5xx. The share token and password are never printed.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime

MiB = 1024 * 1024
DEFAULT_CHUNK = 10 * MiB
MAX_CHUNKS = 10000
ATTEMPTS = 8
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 300.0
PROGRESS_INTERVAL = 0.5
CHUNKED_MIN_MAJOR = 32
DAV_NS = "{DAV:}"


class Fatal(Exception):
    pass


class HttpStatus(Exception):
    """A final (non-retryable or retries exhausted) HTTP answer."""

    def __init__(self, code, reason, headers=None):
        super().__init__("HTTP %d" % code)
        self.code = code
        self.reason = reason
        self.headers = headers


# ---------------------------------------------------------------------------- secrets

SECRETS = []


def redact(text):
    text = str(text)
    for s in SECRETS:
        if s:
            text = text.replace(s, "***")
    return text


def parse_share_url(url):
    """-> (base, token). `https://host[:port][/sub][/index.php]/s/<token>`."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Fatal("ROBOVAST_SHARE_URL is not an http(s) URL")
    path = parts.path.rstrip("/")
    root = "%s://%s" % (parts.scheme, parts.netloc)
    if "/s/" in path + "/":
        prefix, _, rest = (path + "/").rpartition("/s/")
        token = rest.strip("/").split("/")[0]
        prefix = prefix.rstrip("/")
        if prefix.endswith("/index.php"):
            prefix = prefix[: -len("/index.php")]
        base = root + prefix
    else:
        # upstream: token = last path segment, base = scheme://host[:port]
        token = path.rsplit("/", 1)[-1]
        base = root
    if not token:
        raise Fatal("cannot find the share token in ROBOVAST_SHARE_URL")
    return base, token


# ---------------------------------------------------------------------------- output

def fmt_rate(bps):
    if bps >= MiB:
        return "%.1f MiB/s" % (bps / MiB)
    if bps >= 1024:
        return "%.1f KiB/s" % (bps / 1024)
    return "%d B/s" % int(bps)


def write_json_atomic(path, obj):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Progress:
    def __init__(self, run_id, total, progress_file):
        self.run_id = run_id
        self.total = total
        self.file = progress_file
        self.committed = 0      # bytes done (sent or skipped)
        self.current = 0        # bytes of the request in flight
        self.resumed_from = 0
        self.start = time.monotonic()
        self.sent_this_session = 0
        self.last_pct = None
        self.last_file_write = 0.0
        self.drawn = False

    def skip(self, n):
        self.committed += n
        self.resumed_from += n
        self.update()

    def reset(self):
        """Forget everything (a full single PUT restarts from byte 0)."""
        self.committed = 0
        self.current = 0
        self.resumed_from = 0
        self.update(force=True)

    def sending(self, n):
        self.current += n
        self.sent_this_session += n
        self.update()

    def attempt_failed(self):
        self.current = 0
        self.update(force=True)

    def commit(self):
        self.committed += self.current
        self.current = 0
        self.update()

    def done_bytes(self):
        return min(self.total, self.committed + self.current)

    def update(self, force=False):
        done = self.done_bytes()
        pct = 100.0 if self.total == 0 else 100.0 * done / self.total
        if force or self.last_pct is None or pct - self.last_pct >= 1.0 or pct < self.last_pct \
                or (done == self.total and self.last_pct != pct):
            self.last_pct = pct
            self.draw(done, pct)
        now = time.monotonic()
        if self.file and (force or done == self.total or now - self.last_file_write >= PROGRESS_INTERVAL):
            self.last_file_write = now
            try:
                write_json_atomic(self.file, {"bytes": done, "total": self.total,
                                              "resumed_from": self.resumed_from})
            except OSError:
                pass

    def draw(self, done, pct):
        filled = 20 if self.total == 0 else int(20 * done / self.total)
        bar = "\u2588" * filled + "\u2591" * (20 - filled)
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = fmt_rate(self.sent_this_session / elapsed)
        sys.stdout.write("\r%s  [%s]  %5.1f%%  %.1f MiB/%.1f MiB  %s\033[K"
                         % (self.run_id, bar, pct, done / MiB, self.total / MiB, rate))
        sys.stdout.flush()
        self.drawn = True


class FileSlice:
    """read()-able view of [offset, offset+length) of a file, reporting progress."""

    def __init__(self, path, offset, length, progress):
        self.f = open(path, "rb")
        self.f.seek(offset)
        self.left = length
        self.progress = progress

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        if n is None or n < 0 or n > self.left:
            n = self.left
        n = min(n, MiB)
        data = self.f.read(n)
        if not data:
            raise Fatal("archive shrank while uploading")
        self.left -= len(data)
        self.progress.sending(len(data))
        return data

    def close(self):
        self.f.close()


# ---------------------------------------------------------------------------- HTTP

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if req.get_method() in ("GET", "HEAD"):
            return super().redirect_request(req, fp, code, msg, headers, newurl)
        return None


OPENER = urllib.request.build_opener(NoRedirect())


def retry_after_seconds(headers):
    if headers is None:
        return None
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), RETRY_AFTER_MAX))
    except ValueError:
        pass
    try:
        dt = parsedate_to_datetime(value)
        return max(0.0, min(dt.timestamp() - time.time(), RETRY_AFTER_MAX))
    except (TypeError, ValueError, OverflowError):
        return None


class Client:
    def __init__(self, token, password, timeout):
        self.timeout = timeout
        cred = base64.b64encode(("%s:%s" % (token, password)).encode("utf-8")).decode("ascii")
        SECRETS.append(cred)
        self.auth = "Basic " + cred

    def request(self, method, url, headers=None, body=None, progress=None, attempts=ATTEMPTS,
                accept_statuses=()):
        """-> (status, headers, body bytes) of a final answer. Retries connection errors,
        timeouts, 429 and 5xx. `body` is a callable returning a fresh read()-able (or None).
        Statuses >= 400 that are not retried are returned when in accept_statuses, otherwise
        raised as HttpStatus."""
        hdrs = {"X-Requested-With": "XMLHttpRequest"}
        if "/public.php/" in url:
            hdrs["Authorization"] = self.auth
        hdrs.update(headers or {})
        last = None
        for attempt in range(1, attempts + 1):
            data = body() if body is not None else None
            req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (attempt - 1))
            try:
                with OPENER.open(req, timeout=self.timeout) as resp:
                    content = resp.read()
                    return resp.status, resp.headers, content
            except urllib.error.HTTPError as e:
                try:
                    e.read()
                except Exception:  # noqa: BLE001
                    pass
                code = e.code
                if code == 429 or 500 <= code <= 599:
                    last = HttpStatus(code, e.reason, e.headers)
                    ra = retry_after_seconds(e.headers)
                    if ra is not None:
                        delay = ra
                elif code in accept_statuses:
                    return code, e.headers, b""
                else:
                    raise HttpStatus(code, e.reason, e.headers)
            except Fatal:
                raise
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError) as e:
                reason = getattr(e, "reason", None) or e
                last = Fatal(redact("%s: %s" % (type(e).__name__, reason)))
            finally:
                if data is not None and hasattr(data, "close"):
                    data.close()
            if progress is not None:
                progress.attempt_failed()
            if attempt < attempts:
                time.sleep(delay)
        raise last


# ---------------------------------------------------------------------------- upload

def detect_version(client, base):
    """Major version from status.php, or None."""
    try:
        status, _, content = client.request("GET", base + "/status.php", attempts=3)
    except (HttpStatus, Fatal):
        return None
    if status != 200:
        return None
    try:
        info = json.loads(content.decode("utf-8"))
        version = str(info.get("version") or info.get("versionstring") or "")
        return int(version.split(".")[0])
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


def upload_single(client, base, token, filename, archive, size, progress):
    url = "%s/public.php/webdav/%s" % (base, urllib.parse.quote(filename))
    # A body-less authenticated request first: a server refusing the credentials closes the
    # connection while a large body is still being sent, which would look like a network
    # error (retried) instead of the 401 it is.
    client.request("PROPFIND", base + "/public.php/webdav/", headers={"Depth": "0"},
                   accept_statuses=(400, 405, 409, 412, 415, 501))

    def body():
        progress.reset()
        return FileSlice(archive, 0, size, progress)

    status, _, _ = client.request(
        "PUT", url, body=body, progress=progress,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    progress.commit()
    return status


def parse_chunks(xml_bytes):
    """PROPFIND multistatus -> {chunk name: size} (5-digit names only) and all names."""
    chunks, others = {}, []
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError:
        raise Fatal("Nextcloud answered PROPFIND with invalid XML")
    responses = root.findall(DAV_NS + "response")
    for resp in responses[1:] if len(responses) > 0 else []:
        href = resp.findtext(DAV_NS + "href") or ""
        name = urllib.parse.unquote(href.rstrip("/").rsplit("/", 1)[-1])
        length = None
        for el in resp.iter(DAV_NS + "getcontentlength"):
            try:
                length = int((el.text or "").strip())
            except ValueError:
                pass
        if re.fullmatch(r"\d{5}", name):
            chunks[name] = length
        elif name:
            others.append(name)
    return chunks, others


def upload_chunked(client, base, token, filename, archive, size, mtime, progress, chunk_size,
                   state, save_state):
    """True when done; False when chunked uploads turn out unsupported (fall back)."""
    upload_id = "vast-" + hashlib.sha256(
        ("%s%d%d" % (filename, size, int(mtime))).encode("utf-8")).hexdigest()[:16]
    if state.get("upload_id") == upload_id and state.get("mode") == "chunked" \
            and isinstance(state.get("chunk_size"), int) and state["chunk_size"] > 0:
        chunk_size = state["chunk_size"]  # resume with the chunk size of the first attempt
    chunk_size = max(chunk_size, -(-size // MAX_CHUNKS))
    n_chunks = -(-size // chunk_size)
    collection = "%s/public.php/dav/uploads/%s/%s" % (base, urllib.parse.quote(token), upload_id)
    destination = "%s/public.php/dav/files/%s/%s" % (
        base, urllib.parse.quote(token), urllib.parse.quote(filename))
    common = {"Destination": destination, "OC-Total-Length": str(size)}

    state.update({"mode": "chunked", "upload_id": upload_id, "chunk_size": chunk_size,
                  "size": size, "mtime": int(mtime), "filename": filename, "done": False})
    save_state()

    existing = {}
    for _ in range(2):
        status, _, _ = client.request("MKCOL", collection, headers={"Destination": destination},
                                      accept_statuses=(404, 405, 501))
        if status in (404, 501):
            return False
        if status == 405:  # exists: resume
            st, _, content = client.request("PROPFIND", collection,
                                            headers={"Depth": "1", "Content-Type": "application/xml"},
                                            accept_statuses=(404, 405, 501))
            if st != 207:
                return False  # 405 without a collection: chunked uploads not offered
            existing, others = parse_chunks(content)
            stale = [n for n in existing if not 1 <= int(n) <= n_chunks] + others
            if stale:
                # left over from an attempt with other chunks: start the collection afresh
                client.request("DELETE", collection, accept_statuses=(404,))
                existing = {}
                continue
        break

    for i in range(1, n_chunks + 1):
        name = "%05d" % i
        offset = (i - 1) * chunk_size
        length = min(chunk_size, size - offset)
        if existing.get(name) == length:
            progress.skip(length)
            continue
        client.request(
            "PUT", "%s/%s" % (collection, name), progress=progress,
            body=lambda o=offset, n=length: FileSlice(archive, o, n, progress),
            headers=dict(common, **{"Content-Type": "application/octet-stream",
                                    "Content-Length": str(length)}))
        progress.commit()

    try:
        client.request("MOVE", collection + "/.file", headers=common)
    except HttpStatus as e:
        # a retried MOVE whose first attempt did assemble the file finds no collection
        if e.code not in (404, 409) or not destination_complete(client, destination, size):
            raise
    return True


def destination_complete(client, destination, size):
    try:
        status, headers, _ = client.request("HEAD", destination, attempts=3)
    except (HttpStatus, Fatal):
        return False
    try:
        return status == 200 and int(headers.get("Content-Length", "-1")) == size
    except ValueError:
        return False


def env_int(name, default, minimum=1):
    value = os.environ.get(name)
    if not value:
        return default
    try:
        n = int(float(value))
    except ValueError:
        raise Fatal("%s must be a number" % name)
    if n < minimum:
        raise Fatal("%s must be at least %d" % (name, minimum))
    return n


def run(argv):
    if len(argv) < 2 or not argv[1]:
        sys.stderr.write("Usage: python upload_nextcloud.py <run_id>\n")
        return 1
    run_id = argv[1]
    share_url = os.environ.get("ROBOVAST_SHARE_URL", "")
    if not share_url:
        sys.stderr.write("ERROR: ROBOVAST_SHARE_URL environment variable is not set\n")
        return 1
    password = os.environ.get("ROBOVAST_SHARE_PASSWORD", "")
    archive = os.environ.get("VAST_ARCHIVE") or "/data/%s.tar.gz" % run_id
    progress = None
    try:
        base, token = parse_share_url(share_url)
        SECRETS.extend([token, urllib.parse.quote(token), password])
        SECRETS.sort(key=len, reverse=True)
        if not os.path.isfile(archive):
            sys.stderr.write("ERROR: archive not found: %s\n" % archive)
            return 1
        chunk_size = env_int("VAST_CHUNK_SIZE", DEFAULT_CHUNK)
        timeout = env_int("VAST_HTTP_TIMEOUT", 300)
        state_file = os.environ.get("VAST_STATE_FILE") or archive + ".nextcloud.json"
        st = os.stat(archive)
        size, mtime = st.st_size, st.st_mtime
        filename = os.path.basename(archive)

        state = {}
        try:
            with open(state_file) as f:
                state = json.load(f)
            if not isinstance(state, dict):
                state = {}
        except (OSError, ValueError):
            state = {}

        def save_state():
            try:
                write_json_atomic(state_file, state)
            except OSError:
                pass

        print("%s  uploading to Nextcloud..." % run_id, flush=True)
        progress = Progress(run_id, size, os.environ.get("VAST_PROGRESS_FILE"))
        client = Client(token, password, timeout)

        done = False
        if size > 0:
            major = detect_version(client, base)
            if major is not None and major >= CHUNKED_MIN_MAJOR:
                done = upload_chunked(client, base, token, filename, archive, size, mtime,
                                      progress, chunk_size, state, save_state)
                if not done:
                    progress.reset()
        if not done:
            state.clear()
            state.update({"mode": "single", "size": size, "mtime": int(mtime),
                          "filename": filename, "done": False})
            save_state()
            upload_single(client, base, token, filename, archive, size, progress)
        state["done"] = True
        save_state()
        progress.update(force=True)
        sys.stdout.write("\r%s  uploaded (%.1f MiB)  \u2713\033[K\n" % (run_id, size / MiB))
        sys.stdout.flush()
        return 0
    except HttpStatus as e:
        fail(progress, "HTTP %d uploading %s to Nextcloud: %s"
             % (e.code, os.path.basename(archive), e.reason))
    except Fatal as e:
        fail(progress, "Upload failed: %s" % e)
    except KeyboardInterrupt:
        fail(progress, "Upload failed: interrupted")
    except OSError as e:
        fail(progress, "Upload failed: %s: %s" % (type(e).__name__, e.strerror or e))
    return 1


def fail(progress, message):
    if progress is not None and progress.drawn:
        sys.stdout.write("\n")
        sys.stdout.flush()
    sys.stderr.write("ERROR: %s\n" % redact(message))
    sys.stderr.flush()


def main():
    try:
        return run(sys.argv)
    except Exception as e:  # noqa: BLE001 - never a traceback that could carry a secret
        sys.stderr.write("ERROR: Upload failed: %s\n" % redact("%s: %s" % (type(e).__name__, e)))
        return 1


if __name__ == "__main__":
    sys.exit(main())
