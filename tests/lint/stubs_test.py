#!/usr/bin/env python3
"""The stub-generation commands of docs/clients.md ("## Other languages") run
as printed there, and write the files they say they write.

Each ```sh block under "### Go" and "### Java (and Kotlin)" runs with bash in
a fresh directory holding a link to the repository's proto/ (the commands
are written to run from the repository's root; they must not write into the
checkout). Usage: stubs_test.py REPO_ROOT. Exit status 0 when every command
succeeded and every file the comments name exists.
"""

import glob
import os
import re
import subprocess
import sys
import tempfile


def blocks(docs: str, heading: str) -> list:
    """The ```sh blocks of one ### subsection of ## Other languages."""
    section = docs.split("\n## Other languages\n", 1)[1].split("\n## ", 1)[0]
    sub = section.split(f"\n### {heading}\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", sub, re.S)


def expected_files(block: str) -> list:
    """Files a block's final comment names, with {a,b} and * expanded as
    patterns (the comment is e.g. gen/x/{a,b}.pb.go, c.go)."""
    comment = [line for line in block.splitlines() if line.startswith("# ")][-1][2:]
    patterns = []
    prefix = ""
    for part in re.split(r",\s+(?![^{]*\})", comment):
        if "/" in part:
            prefix = part.rsplit("/", 1)[0] + "/"
        else:
            part = prefix + part
        patterns.append(part)
    out = []
    for pattern in patterns:
        m = re.search(r"\{([^}]*)\}", pattern)
        if m:
            out.extend(pattern[:m.start()] + alt + pattern[m.end():] for alt in m.group(1).split(","))
        else:
            out.append(pattern)
    return out


def main() -> int:
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    with open(os.path.join(root, "docs", "clients.md"), encoding="utf-8") as f:
        docs = f.read()
    headings = ("Go", "Java (and Kotlin)")
    failed = [heading for heading in headings if not check(docs, root, heading)]
    print(f"{len(headings) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def check(docs: str, root: str, heading: str) -> bool:
    """Runs one language's block; True when it ran and wrote what it says."""
    found = blocks(docs, heading)
    if len(found) != 1:
        print(f"FAIL {heading}: expected one sh block, found {len(found)}")
        return False
    block = found[0]
    with tempfile.TemporaryDirectory(prefix="sb-stubs.") as work:
        os.symlink(os.path.join(root, "proto"), os.path.join(work, "proto"))
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work,
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(f"FAIL {heading}: exit {run.returncode}\n{run.stderr}")
            return False
        missing = [p for p in expected_files(block) if not glob.glob(os.path.join(work, p))]
        for pattern in missing:
            print(f"FAIL {heading}: {pattern} was not written")
        if not missing:
            print(f"ok {heading}: {', '.join(expected_files(block))}")
        return not missing


if __name__ == "__main__":
    sys.exit(main())
