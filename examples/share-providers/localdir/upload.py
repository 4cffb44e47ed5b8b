#!/usr/bin/env python3
"""Example share provider: copy a run archive into LOCALDIR_TARGET (pod side; stdlib only).

    python upload.py RUN_ID

Environment (what vast gives every provider script):
  VAST_ARCHIVE        the archive to upload (/data/archives/<RUN_ID>.tar.gz)
  VAST_RUN_ID         the run
  VAST_STATE_FILE     a file of this script's own, kept across pod restarts: here the identity
                      (size, mtime) of the archive the partial copy belongs to
  VAST_PROGRESS_FILE  where to write {"bytes": n, "total": n} now and then (vast shows it)
  VAST_RESULT_FILE    where to write a JSON result on success (optional)
and the provider's pod_env (see provider.yaml): LOCALDIR_TARGET, LOCALDIR_CHUNK_SIZE.

The copy goes to <target>/<name>.partial, is fsynced and renamed, so only a complete file
ever has the archive's name. Started again (after a pod restart), it continues at the end of
the partial copy when it belongs to the same archive (VAST_STATE_FILE), else starts over.
Exit 0 on success, 1 with one `ERROR: ...` line on stderr otherwise.
"""

import json
import os
import sys
import time

MiB = 1024 * 1024
PROGRESS_INTERVAL = 0.5


def write_json_atomic(path, obj):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def progress(path, done, total, resumed_from):
    if path:
        write_json_atomic(path, {"bytes": done, "total": total, "resumed_from": resumed_from})


def main(argv):
    if len(argv) != 2 or not argv[1]:
        raise SystemExit("ERROR: usage: upload.py RUN_ID")
    run = argv[1]
    archive = os.environ.get("VAST_ARCHIVE") or "/data/archives/%s.tar.gz" % run
    target = os.environ.get("LOCALDIR_TARGET", "").strip()
    if not target:
        raise SystemExit("ERROR: LOCALDIR_TARGET is not set")
    try:
        chunk = int(os.environ.get("LOCALDIR_CHUNK_SIZE") or 8 * MiB)
    except ValueError:
        raise SystemExit("ERROR: LOCALDIR_CHUNK_SIZE must be a number of bytes")
    if chunk <= 0:
        raise SystemExit("ERROR: LOCALDIR_CHUNK_SIZE must be positive")
    progress_file = os.environ.get("VAST_PROGRESS_FILE")
    if not os.path.isfile(archive):
        raise SystemExit("ERROR: archive not found: %s" % archive)
    os.makedirs(target, exist_ok=True)
    name = os.path.basename(archive)
    final = os.path.join(target, name)
    partial = final + ".partial"
    st = os.stat(archive)
    total = st.st_size
    identity = {"archive": name, "size": total, "mtime": st.st_mtime}
    state_file = os.environ.get("VAST_STATE_FILE")
    saved = None
    if state_file:
        try:
            with open(state_file) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = None

    if os.path.isfile(final) and os.path.getsize(final) == total:
        print("%s  %s is already in %s" % (run, name, target), flush=True)
        progress(progress_file, total, total, total)
        return 0
    offset = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if offset > total or saved != identity:
        offset = 0  # another archive's partial copy (or none): start over
    if state_file:
        write_json_atomic(state_file, identity)
    resumed_from = offset
    print("%s  copying to %s%s" % (run, target,
                                   " (resuming at %.1f MiB)" % (offset / MiB) if offset else ""),
          flush=True)
    progress(progress_file, offset, total, resumed_from)
    last = time.monotonic()
    with open(archive, "rb") as src, open(partial, "r+b" if offset else "wb") as dst:
        src.seek(offset)
        dst.seek(offset)
        dst.truncate()
        while True:
            data = src.read(chunk)
            if not data:
                break
            dst.write(data)
            offset += len(data)
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL:
                last = now
                dst.flush()
                progress(progress_file, offset, total, resumed_from)
        dst.flush()
        os.fsync(dst.fileno())
    if offset != total:
        raise SystemExit("ERROR: copied %d of %d bytes (the archive changed?)" % (offset, total))
    os.replace(partial, final)
    progress(progress_file, total, total, resumed_from)
    result = os.environ.get("VAST_RESULT_FILE")
    if result:
        write_json_atomic(result, {"path": final, "size": total})
    print("%s  copied %.1f MiB to %s" % (run, total / MiB, final), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except OSError as e:
        sys.stderr.write("ERROR: %s: %s\n" % (type(e).__name__, e.strerror or e))
        sys.exit(1)
