#!/usr/bin/env python3
"""Archive -> Google Drive folder, resumable (pod side of vast).

    python upload_gdrive.py RUN_ID

Environment:
  VAST_ARCHIVE        archive to upload (default /data/<RUN_ID>.tar.gz)
  GDRIVE_SA_JSON      the service-account key JSON (content, not a path)
  ROBOVAST_SHARE_URL  Drive folder URL (.../folders/<id>...) or bare folder id
  GDRIVE_API_BASE     default https://www.googleapis.com
  VAST_PROGRESS_FILE  optional; {"bytes", "total", "resumed_from"}, atomic, <= every 0.5 s
  VAST_RESULT_FILE    optional; {"file_id", "name", "size", "already_uploaded"} on success
  VAST_STATE_FILE     resume state (default VAST_ARCHIVE + ".gdrive.json")
  VAST_CHUNK_SIZE     default 8 MiB, a multiple of 256 KiB
  VAST_HTTP_TIMEOUT   seconds, default 300

Drive v3 resumable upload. The session URI (a capability: whoever holds it can write the
file) is kept in VAST_STATE_FILE (mode 0600) together with the archive's identity, so a
restarted upload continues at the offset the server confirms; it never reaches stdout or
stderr, nor do the key, the signed assertion or the access token.

Exit 0 uploaded (or already there with the same size), 1 failure (one `ERROR: ...` line on
stderr), 2 bad arguments or settings. Stdlib only: RS256 by rs256.py next to this script
(google-auth, then cryptography, are used only when rs256.py cannot be imported).
"""

import base64
import email.utils
import http.client
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SCOPE = "https://www.googleapis.com/auth/drive.file"
DEFAULT_API = "https://www.googleapis.com"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MIME = "application/gzip"
QUANTUM = 256 * 1024
DEFAULT_CHUNK = 8 * 1024 * 1024
DEFAULT_TIMEOUT = 300.0
PROGRESS_INTERVAL = 0.5
MAX_FAILURES = 10
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 300.0
MIB = 1024 * 1024
RATE_LIMIT_REASONS = ("userRateLimitExceeded", "rateLimitExceeded")


class Fatal(Exception):
    def __init__(self, message, code=1):
        Exception.__init__(self, message)
        self.message = message
        self.code = code


class Transient(Exception):
    """A network-level failure (connection refused/reset, timeout, bad response)."""


def out(text):
    sys.stdout.buffer.write(text.encode("utf-8", "replace"))
    sys.stdout.flush()


def warn(text):
    sys.stderr.write("WARNING: %s\n" % text)
    sys.stderr.flush()


# ----------------------------------------------------------------------------- files

def fsync_dir(path):
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_json_atomic(path, obj, mode=0o644, sync=True):
    tmp = path + ".tmp"
    data = (json.dumps(obj, sort_keys=True) + "\n").encode()
    try:
        os.unlink(tmp)
    except OSError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(path)


def remove_file(path):
    for p in (path, path + ".tmp"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            warn("cannot remove %s: %s" % (p, e.strerror or e))


# ------------------------------------------------------------------------ formatting

def fmt_rate(bps):
    if bps >= MIB:
        return "%.1f MiB/s" % (bps / MIB)
    if bps >= 1024:
        return "%.1f KiB/s" % (bps / 1024)
    return "%d B/s" % int(bps)


class Progress:
    """The progress bar on stdout and VAST_PROGRESS_FILE."""

    def __init__(self, run, total, path):
        self.run = run
        self.total = total
        self.path = path
        self.bytes = 0
        self.resumed_from = 0
        self.base_bytes = 0
        self.base_time = time.monotonic()
        self.last_pct = None
        self.last_write = 0.0
        self.drawn = False

    def restart(self, offset):
        """A (new or resumed) session starts at `offset`: the rate counts from here."""
        self.resumed_from = offset
        self.base_bytes = offset
        self.base_time = time.monotonic()
        self.update(offset)

    def pct(self):
        return 100.0 if self.total == 0 else self.bytes * 100.0 / self.total

    def update(self, offset, final=False):
        self.bytes = offset
        pct = self.pct()
        if final or self.last_pct is None or abs(pct - self.last_pct) >= 1.0:
            self.last_pct = pct
            self.draw(pct)
        now = time.monotonic()
        if self.path and (final or now - self.last_write >= PROGRESS_INTERVAL):
            self.last_write = now
            try:
                write_json_atomic(self.path, {"bytes": self.bytes, "total": self.total,
                                              "resumed_from": self.resumed_from}, sync=final)
            except OSError as e:
                warn("cannot write the progress file: %s" % (e.strerror or e))

    def draw(self, pct):
        elapsed = time.monotonic() - self.base_time
        rate = (self.bytes - self.base_bytes) / elapsed if elapsed > 0 else 0.0
        filled = min(20, max(0, int(pct / 5)))
        bar = "\u2588" * filled + "\u2591" * (20 - filled)
        out("\r%s  [%s]  %5.1f%%  %.1f MiB/%.1f MiB  %s\033[K" % (
            self.run, bar, pct, self.bytes / MIB, self.total / MIB, fmt_rate(max(0.0, rate))))
        self.drawn = True

    def end_line(self):
        if self.drawn:
            out("\n")
            self.drawn = False


# ------------------------------------------------------------------------------ auth

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _import_rs256():
    """The stdlib signer next to this script (always there in the pod), or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:  # e.g. run through runpy; normally sys.path[0] already
        sys.path.append(here)
    try:
        import rs256
    except ImportError:
        return None
    return rs256


def make_assertion(info, token_uri):
    """The signed JWT (bytes) for the jwt-bearer grant. Signs with rs256.py (stdlib);
    google-auth, then cryptography, only if rs256.py cannot be imported."""
    now = int(time.time())
    claims = {"iss": info["client_email"], "scope": SCOPE, "aud": token_uri,
              "iat": now, "exp": now + 3600}
    rs256 = _import_rs256()
    if rs256 is not None:
        pem = info["private_key"]
        try:
            rs256.load_private_key(pem)
        except Exception as e:  # noqa: BLE001 - rs256's messages name no key material
            raise Fatal("cannot load the private key of GDRIVE_SA_JSON (%s: %s)"
                        % (type(e).__name__, str(e)[:200]))
        try:
            token = rs256.jwt_encode(pem, claims, key_id=info.get("private_key_id") or None)
        except Exception as e:  # noqa: BLE001
            raise Fatal("cannot sign with the private key of GDRIVE_SA_JSON (%s: %s)"
                        % (type(e).__name__, str(e)[:200]))
        return token.encode("ascii")
    try:
        from google.auth import crypt as gcrypt, jwt as gjwt
    except ImportError:
        gcrypt = None
    if gcrypt is not None:
        try:
            signer = gcrypt.RSASigner.from_service_account_info(info)
        except Exception as e:  # noqa: BLE001 - the message names no key material
            raise Fatal("cannot load the private key of GDRIVE_SA_JSON (%s)" % type(e).__name__)
        return gjwt.encode(signer, claims)
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError:
        raise Fatal("signing the Google service-account token needs rs256.py next to this "
                    "script, or the python package google-auth or cryptography; none is available")
    try:
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    except Exception as e:  # noqa: BLE001
        raise Fatal("cannot load the private key of GDRIVE_SA_JSON (%s)" % type(e).__name__)
    header = {"alg": "RS256", "typ": "JWT"}
    if info.get("private_key_id"):
        header["kid"] = info["private_key_id"]
    signing_input = (b64url(json.dumps(header).encode()) + b"." +
                     b64url(json.dumps(claims).encode()))
    try:
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    except Exception as e:  # noqa: BLE001 - e.g. not an RSA key
        raise Fatal("cannot sign with the private key of GDRIVE_SA_JSON (%s)" % type(e).__name__)
    return signing_input + b"." + b64url(sig)


class Tokens:
    """OAuth2 access tokens by the JWT bearer flow, refreshed before expiry and on 401."""

    def __init__(self, info, timeout):
        self.info = info
        self.token_uri = info.get("token_uri") or DEFAULT_TOKEN_URI
        self.timeout = timeout
        self.token = None
        self.refresh_at = 0.0

    def invalidate(self):
        self.token = None

    def get(self):
        if self.token is None or time.monotonic() >= self.refresh_at:
            self.fetch()
        return self.token

    def fetch(self):
        self.token = None
        assertion = make_assertion(self.info, self.token_uri)
        form = urllib.parse.urlencode({"grant_type": JWT_BEARER,
                                       "assertion": assertion.decode("ascii")}).encode()
        req = urllib.request.Request(self.token_uri, data=form, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                body = e.read()
            except OSError:
                body = b""
            e.close()
            if status >= 500 or status == 429:
                raise RetryableStatus(status, e.headers, body)
            raise Fatal("the Google token endpoint refused the service account (HTTP %d)%s"
                        % (status, token_error(body)))
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise Transient("token request: %s" % describe(e))
        try:
            doc = json.loads(body)
            token = doc["access_token"]
            expires_in = float(doc.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise Fatal("the Google token endpoint answered without an access token")
        if not isinstance(token, str) or not token:
            raise Fatal("the Google token endpoint answered without an access token")
        margin = min(60.0, expires_in / 2)
        self.token = token
        self.refresh_at = time.monotonic() + expires_in - margin


def token_error(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    parts = [str(doc[k]) for k in ("error", "error_description") if doc.get(k)]
    return (": " + ": ".join(parts))[:300] if parts else ""


# ------------------------------------------------------------------------------ http

def describe(e):
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason
    text = getattr(e, "strerror", None) or str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


class RetryableStatus(Exception):
    def __init__(self, status, headers, body):
        Exception.__init__(self, "HTTP %d" % status)
        self.status = status
        self.headers = headers
        self.body = body


class Http:
    """http.client with one kept-alive connection per origin."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.conns = {}
        self.ssl = None

    def request(self, method, url, headers, body=b""):
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = self.conns.get(key)
        if conn is None:
            if parts.scheme == "https":
                if self.ssl is None:
                    self.ssl = ssl.create_default_context()
                conn = http.client.HTTPSConnection(parts.hostname, parts.port,
                                                   timeout=self.timeout, context=self.ssl)
            elif parts.scheme == "http":
                conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                                  timeout=self.timeout)
            else:
                raise Fatal("unsupported URL scheme %r" % parts.scheme)
            self.conns[key] = conn
        hdrs = dict(headers)
        if body or method != "GET":
            hdrs["Content-Length"] = str(len(body))
        try:
            conn.request(method, target, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.drop(key)
            raise Transient(describe(e))
        if resp.will_close:
            self.drop(key)
        return resp.status, resp.headers, data

    def drop(self, key):
        conn = self.conns.pop(key, None)
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


def drive_error(body):
    """': <message>' from a Drive error body (or '')."""
    try:
        doc = json.loads(body)
        msg = doc["error"]["message"]
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip() if body else ""
        if not text or text.startswith("<"):
            return ""
        msg = text.splitlines()[0]
    return (": " + str(msg))[:300]


def drive_reasons(body):
    try:
        doc = json.loads(body)
        return [e.get("reason") for e in doc["error"].get("errors", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def retry_after(headers):
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        secs = when.timestamp() - time.time()
    return min(RETRY_AFTER_MAX, max(0.0, secs))


def parse_range(headers):
    """Offset after the server's `Range: bytes=0-K` (K+1), 0 without one."""
    value = headers.get("Range")
    if not value:
        return 0
    m = re.match(r"\s*bytes\s*=\s*(\d+)\s*-\s*(\d+)\s*$", value)
    if not m:
        raise Fatal("Google Drive answered with an unreadable Range header %r" % value[:80])
    return int(m.group(2)) + 1


# -------------------------------------------------------------------------- uploader

def folder_id_of(value):
    m = re.search(r"/folders/([a-zA-Z0-9_-]+)", value)
    return m.group(1) if m else value.strip()


def q_quote(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Uploader:
    def __init__(self, run, archive, info, folder, api, state_path, chunk, timeout,
                 progress_path, result_path):
        self.run = run
        self.archive = archive
        self.name = os.path.basename(archive)
        self.folder = folder
        self.api = api.rstrip("/")
        self.state_path = state_path
        self.chunk = chunk
        self.result_path = result_path
        self.info = info
        self.http = Http(timeout)
        self.tokens = Tokens(info, timeout)
        st = os.stat(archive)
        self.size = st.st_size
        self.mtime = st.st_mtime
        self.progress = Progress(run, self.size, progress_path)
        self.failures = 0
        self.restarts = 0
        self.session = None
        self.existing = None

    # ---- failures and calls

    def backoff(self, what, wait=None):
        """One more consecutive failure: sleep (or give up after MAX_FAILURES)."""
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            raise Fatal("Google Drive upload failed %d times in a row (last: %s)"
                        % (self.failures, what))
        delay = min(BACKOFF_MAX, 2.0 ** (self.failures - 1))
        if wait is not None:
            delay = wait
        self.progress.end_line()
        warn("Google Drive: %s; retrying in %s s (%d/%d)"
             % (what, ("%.1f" % delay).rstrip("0").rstrip("."), self.failures, MAX_FAILURES))
        time.sleep(delay)

    def call(self, method, url, headers=None, body=b"", retry=True):
        """One Drive request with the bearer token. 401: new token, once. Transient
        failures (network, 5xx, 429, rate-limit 403): backoff, then again (retry) or None."""
        refreshed = False
        while True:
            try:
                hdrs = {"Authorization": "Bearer " + self.tokens.get()}
                hdrs.update(headers or {})
                status, rhdrs, data = self.http.request(method, url, hdrs, body)
            except Transient as e:
                self.backoff(str(e))
                if retry:
                    continue
                return None
            except RetryableStatus as e:
                self.backoff("token endpoint HTTP %d" % e.status, retry_after(e.headers))
                if retry:
                    continue
                return None
            if status == 401:
                self.tokens.invalidate()
                if refreshed:
                    raise Fatal("Google Drive rejected a fresh access token (HTTP 401)%s"
                                % drive_error(data))
                refreshed = True
                continue
            if status >= 500 or status == 429 or (
                    status == 403 and any(r in RATE_LIMIT_REASONS for r in drive_reasons(data))):
                self.backoff("HTTP %d" % status, retry_after(rhdrs))
                if retry:
                    continue
                return None
            return status, rhdrs, data

    # ---- state

    def identity(self):
        return {"size": self.size, "mtime": self.mtime, "name": self.name,
                "folder": self.folder}

    def load_state(self):
        try:
            with open(self.state_path, "rb") as f:
                state = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            warn("ignoring an unreadable upload state file")
            return None
        if not isinstance(state, dict) or not isinstance(state.get("session_uri"), str):
            return None
        if any(state.get(k) != v for k, v in self.identity().items()):
            warn("the archive or the folder changed since the saved upload; starting over")
            return None
        return state

    def save_state(self, session):
        state = dict(self.identity(), session_uri=session, created_at=time.time())
        try:
            write_json_atomic(self.state_path, state, mode=0o600)
        except OSError as e:
            raise Fatal("cannot write the upload state file %s: %s"
                        % (self.state_path, e.strerror or e))

    # ---- protocol steps

    def find_existing(self):
        """Files of our name in the folder: (id, same_size) of the best match, or None."""
        q = "name = %s and %s in parents and trashed = false" % (
            q_quote(self.name), q_quote(self.folder))
        url = "%s/drive/v3/files?%s" % (self.api, urllib.parse.urlencode({
            "q": q, "supportsAllDrives": "true", "includeItemsFromAllDrives": "true",
            "fields": "files(id,name,size)"}, quote_via=urllib.parse.quote))
        status, _, data = self.call("GET", url, {"Accept": "application/json"})
        if status != 200:
            raise Fatal("cannot list the target Google Drive folder %s (HTTP %d)%s%s"
                        % (self.folder, status, drive_error(data), self.share_hint(status)))
        try:
            files = json.loads(data).get("files", [])
        except (ValueError, AttributeError):
            raise Fatal("Google Drive answered the folder listing with invalid JSON")
        found = None
        for f in files:
            if not isinstance(f, dict) or f.get("name") != self.name:
                continue
            try:
                same = int(f.get("size")) == self.size
            except (TypeError, ValueError):
                same = False
            if same:
                return f.get("id"), True
            if found is None:
                found = (f.get("id"), False)
        return found

    def share_hint(self, status):
        if status in (403, 404):
            return " (is the folder shared with %s?)" % self.info.get("client_email")
        return ""

    def new_session(self):
        """Step 2: the session URI of a new upload, or None when the file is there."""
        existing = self.find_existing()
        if existing is not None:
            file_id, same = existing
            if same:
                return None, file_id
            raise Fatal("%s already exists in the target Google Drive folder (file id: %s)."
                        % (self.name, file_id))
        meta = json.dumps({"name": self.name, "parents": [self.folder],
                           "mimeType": MIME}).encode()
        url = "%s/upload/drive/v3/files?uploadType=resumable&supportsAllDrives=true" % self.api
        status, hdrs, data = self.call("POST", url, {
            "X-Upload-Content-Type": MIME,
            "X-Upload-Content-Length": str(self.size),
            "Content-Type": "application/json; charset=UTF-8"}, meta)
        if status not in (200, 201):
            raise Fatal("Google Drive refused to start the upload (HTTP %d)%s%s"
                        % (status, drive_error(data), self.share_hint(status)))
        session = hdrs.get("Location")
        if not session:
            raise Fatal("Google Drive started the upload without a session URI")
        session = urllib.parse.urljoin(url, session)
        self.save_state(session)
        return session, None

    def query(self):
        """('offset', k) | ('done', body) | ('expired', None) for the current session."""
        status, hdrs, data = self.call("PUT", self.session,
                                       {"Content-Range": "bytes */%d" % self.size}, b"")
        if status == 308:
            return "offset", parse_range(hdrs)
        if status in (200, 201):
            return "done", data
        if status in (404, 410):
            return "expired", None
        raise Fatal("Google Drive refused the upload status query (HTTP %d)%s"
                    % (status, drive_error(data)))

    def finish(self, data, already):
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        if doc.get("size") is not None:
            try:
                got = int(doc["size"])
            except (TypeError, ValueError):
                got = None
            if got != self.size:
                remove_file(self.state_path)
                raise Fatal("Google Drive stored %s with %s bytes instead of %d"
                            % (self.name, doc.get("size"), self.size))
        return doc.get("id"), already

    def upload(self):
        """Returns (file id or None, already_uploaded)."""
        out("%s  uploading to Google Drive...\n" % self.run)
        offset = None
        state = self.load_state()
        if state is None:
            remove_file(self.state_path)
        else:
            self.session = state["session_uri"]
            kind, value = self.query()
            if kind == "done":
                self.progress.resumed_from = self.size
                return self.finish(value, False)
            if kind == "expired":
                remove_file(self.state_path)
                self.session = None
            else:
                offset = value
                if offset > 0:
                    out("%s  resuming at %.1f MiB\n" % (self.run, offset / MIB))
        if self.session is None:
            self.session, file_id = self.new_session()
            if self.session is None:
                out("%s  %s is already in the target Google Drive folder\n"
                    % (self.run, self.name))
                return file_id, True
            offset = 0
        self.progress.restart(offset)
        with open(self.archive, "rb") as f:
            while True:
                if offset > self.size:
                    raise Fatal("Google Drive confirmed %d bytes of a %d-byte file"
                                % (offset, self.size))
                if offset == self.size:
                    # Everything is there but not confirmed as complete (or an empty file):
                    # the status query finalizes or tells us what is missing.
                    kind, value = self.query()
                    if kind == "done":
                        return self.finish(value, False)
                    if kind == "expired":
                        offset = self.restart_session()
                        if offset is None:
                            return self.existing
                        continue
                    if value >= self.size:
                        self.backoff("Google Drive has all bytes but did not complete the file")
                    offset = value
                    self.progress.update(offset)
                    continue
                end = min(offset + self.chunk, self.size)
                f.seek(offset)
                data = f.read(end - offset)
                if len(data) != end - offset:
                    raise Fatal("%s shrank while being uploaded" % self.archive)
                res = self.call("PUT", self.session, {
                    "Content-Range": "bytes %d-%d/%d" % (offset, end - 1, self.size),
                    "Content-Type": MIME}, data, retry=False)
                if res is None:
                    kind, value = self.query()
                    if kind == "done":
                        return self.finish(value, False)
                    if kind == "expired":
                        offset = self.restart_session()
                        if offset is None:
                            return self.existing
                    else:
                        offset = value
                        self.progress.update(offset)
                    continue
                status, hdrs, body = res
                if status in (200, 201):
                    self.failures = 0
                    return self.finish(body, False)
                if status == 308:
                    new = parse_range(hdrs)
                    if new <= offset:
                        self.backoff("Google Drive kept none of the chunk at %d" % offset)
                    else:
                        self.failures = 0
                    offset = new
                    self.progress.update(offset)
                    continue
                if status in (404, 410):
                    offset = self.restart_session()
                    if offset is None:
                        return self.existing
                    continue
                raise Fatal("Google Drive refused a chunk of the upload (HTTP %d)%s"
                            % (status, drive_error(body)))

    def restart_session(self):
        """The session expired: a new one from 0 (None when the file turned out complete)."""
        self.progress.end_line()
        self.restarts += 1
        if self.restarts > MAX_FAILURES:
            raise Fatal("Google Drive expired the upload session %d times" % self.restarts)
        warn("Google Drive: the upload session expired; starting over")
        remove_file(self.state_path)
        self.session, file_id = self.new_session()
        if self.session is None:
            self.existing = (file_id, True)
            return None
        self.progress.restart(0)
        return 0


# ------------------------------------------------------------------------------ main

def env_required(name):
    value = os.environ.get(name)
    if value is None or not value.strip():
        raise Fatal("%s environment variable is not set" % name)
    return value


def env_number(name, default, kind):
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value.strip())
    except ValueError:
        raise Fatal("%s must be a number, got %r" % (name, value[:40]), 2)
    if number <= 0:
        raise Fatal("%s must be positive, got %r" % (name, value[:40]), 2)
    return number


def main(argv):
    if len(argv) != 2 or not argv[1].strip():
        raise Fatal("usage: upload_gdrive.py RUN_ID", 2)
    run = argv[1]
    chunk = env_number("VAST_CHUNK_SIZE", DEFAULT_CHUNK, int)
    if chunk % QUANTUM:
        raise Fatal("VAST_CHUNK_SIZE must be a multiple of 262144 (256 KiB), got %d" % chunk, 2)
    timeout = env_number("VAST_HTTP_TIMEOUT", DEFAULT_TIMEOUT, float)
    archive = os.environ.get("VAST_ARCHIVE") or "/data/%s.tar.gz" % run
    sa_json = env_required("GDRIVE_SA_JSON")
    share = env_required("ROBOVAST_SHARE_URL")
    try:
        info = json.loads(sa_json)
    except ValueError:
        raise Fatal("GDRIVE_SA_JSON is not valid JSON")
    if not isinstance(info, dict):
        raise Fatal("GDRIVE_SA_JSON is not a service-account key (not a JSON object)")
    for field in ("client_email", "private_key"):
        if not isinstance(info.get(field), str) or not info.get(field):
            raise Fatal("GDRIVE_SA_JSON has no %s" % field)
    folder = folder_id_of(share)
    if not folder:
        raise Fatal("ROBOVAST_SHARE_URL names no Google Drive folder")
    if not os.path.isfile(archive):
        raise Fatal("archive not found: %s" % archive)
    api = os.environ.get("GDRIVE_API_BASE") or DEFAULT_API
    state_path = os.environ.get("VAST_STATE_FILE") or archive + ".gdrive.json"
    uploader = Uploader(run, archive, info, folder, api, state_path, chunk, timeout,
                        os.environ.get("VAST_PROGRESS_FILE") or None,
                        os.environ.get("VAST_RESULT_FILE") or None)
    try:
        file_id, already = uploader.upload()
    except BaseException:
        uploader.progress.end_line()
        raise
    remove_file(state_path)
    size = uploader.size
    if already:
        uploader.progress.resumed_from = size
    uploader.progress.update(size, final=True)
    if uploader.result_path:
        try:
            write_json_atomic(uploader.result_path, {"file_id": file_id, "name": uploader.name,
                                                     "size": size, "already_uploaded": already})
        except OSError as e:
            warn("cannot write the result file: %s" % (e.strerror or e))
    out("\r%s  uploaded (%.1f MiB)  \u2713\033[K\n" % (run, size / MIB))
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except Fatal as e:
        sys.stderr.write("ERROR: %s\n" % e.message)
        sys.stderr.flush()
        code = e.code
    except KeyboardInterrupt:
        sys.stderr.write("ERROR: interrupted\n")
        code = 130
    except Exception as e:  # noqa: BLE001 - one line, no traceback (it could show headers)
        sys.stderr.write("ERROR: unexpected %s: %s\n" % (type(e).__name__, e))
        code = 1
    sys.exit(code)
