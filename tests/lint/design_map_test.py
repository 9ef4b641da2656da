#!/usr/bin/env python3
"""docs/design.md's map of the rooms matches the folders.

The map is the first fenced block under "## Layers". Every folder of server/
(at any depth), of tests/ (one level down), of client/ and deploy/ (when they
exist), proto/ and scripts/ must be named there, and every path the map names
must exist. ctest runs it (label unit); it exits non-zero listing each
difference.

Usage: design_map_test.py [REPO_ROOT]
"""
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), "..", ".."))
TOPS = ("server/", "proto/", "tests/", "client/", "deploy/", "scripts/", "docs/")


def map_block():
    with open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^## Layers\n(.*?)(?=^## )", text, re.S | re.M)
    if not section:
        sys.exit("docs/design.md has no '## Layers' section")
    block = re.search(r"^```[a-z]*\n(.*?)^```", section.group(1), re.S | re.M)
    if not block:
        sys.exit("docs/design.md's '## Layers' section has no fenced map")
    return block.group(1)


def named_paths(block):
    """Tokens of the map that are repository paths."""
    return {t.rstrip(".,;:") for t in re.findall(r"[A-Za-z0-9_./-]+", block) if t.startswith(TOPS)}


def tracked_dirs():
    try:
        files = subprocess.run(["git", "-C", ROOT, "ls-files"], check=True, capture_output=True,
                               text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = [os.path.relpath(os.path.join(d, f), ROOT)
                 for d, _, fs in os.walk(ROOT) if "/." not in d and "/build" not in d for f in fs]
    dirs = set()
    for f in files:
        parts = f.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def must_be_named(d):
    depth = d.count("/")
    return (d.startswith("server/") or (d.startswith("tests/") and depth == 1) or
            (d.split("/")[0] in ("client", "deploy") and depth <= 1) or d in ("proto", "scripts"))


def main():
    named = named_paths(map_block())
    problems = [f"the map names {p}, which does not exist" for p in sorted(named)
                if not os.path.exists(os.path.join(ROOT, p))]
    named_dirs = {p.rstrip("/") for p in named}
    for d in sorted(tracked_dirs()):
        if must_be_named(d) and not any(n == d or n.startswith(d + "/") for n in named_dirs):
            problems.append(f"{d}/ is in the tree but not in the map")
    if problems:
        print("docs/design.md's map of the rooms (## Layers) does not match the folders:")
        for p in problems:
            print("  - " + p)
        return 1
    print(f"design map: {len(named)} paths named, every folder present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
