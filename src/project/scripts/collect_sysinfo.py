#!/usr/bin/env python3
"""vast: write basic system information of the scenario container as YAML (stdlib only)."""
import argparse
import json
import os
import platform
import socket
import sys


def meminfo_total():
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output", required=True)
    p.add_argument("--fact", action="append", default=[], help="key=value added verbatim")
    args = p.parse_args()
    info = {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_bytes": meminfo_total(),
    }
    for fact in args.fact:
        key, _, value = fact.partition("=")
        if key:
            info[key] = value
    with open(args.output, "w", encoding="utf-8") as f:
        for key, value in info.items():
            # JSON scalars are valid YAML scalars.
            f.write(f"{key}: {json.dumps(value)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
