#!/usr/bin/python3
"""The image's runtime packages provide every library the broker loads.

deploy/docker/runtime-packages.txt is what the Dockerfile's runtime stage
installs. This test holds it to the binary just built: the list equals what
``runtime-packages derive`` finds (the packages of the broker's direct
libraries, plus ca-certificates), and every library the dynamic loader maps
(``ldd``: the indirect ones too) comes from a package in the list or in its
dependency closure (Depends and Pre-Depends, as dpkg records them for the
installed packages), so apt brings it into the image. rootfs_test then
proves the same on a real bookworm root filesystem.

Usage: runtime_libs_test.py PATH_TO_SESSION_BROKER (ctest label deploy).
"""
from __future__ import annotations

import re
import subprocess
import sys
import unittest
from typing import Dict, List, Set

import deploy_support as ds

BROKER = ""


def installed_packages() -> Dict[str, Dict[str, str]]:
    """Installed packages: name -> {"depends": ..., "provides": ...}."""
    fields = "${Package}\t${Status}\t${Depends}, ${Pre-Depends}\t${Provides}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fields], check=True, capture_output=True,
                         text=True).stdout
    packages: Dict[str, Dict[str, str]] = {}
    for line in out.splitlines():
        name, status, depends, provides = line.split("\t")
        if status.endswith(" installed"):
            packages[name] = {"depends": depends, "provides": provides}
    return packages


def dependency_closure(roots: List[str], packages: Dict[str, Dict[str, str]]) -> Set[str]:
    """ROOTS and everything they depend on, among the installed packages.

    An alternative ("a | b") or a virtual package counts through whichever
    installed package satisfies it, as apt would have chosen on this system.
    """
    providers: Dict[str, Set[str]] = {}
    for name, fields in packages.items():
        for virtual in filter(None, (p.strip() for p in fields["provides"].split(","))):
            providers.setdefault(re.split(r"[ (:]", virtual)[0], set()).add(name)
    seen: Set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for clause in packages.get(name, {}).get("depends", "").split(","):
            for alternative in clause.split("|"):
                dep = re.split(r"[ (:]", alternative.strip())[0]
                if not dep:
                    continue
                if dep in packages:
                    todo.append(dep)
                    break
                if dep in providers:
                    todo.extend(providers[dep])
                    break
    return seen


class RuntimePackagesTest(unittest.TestCase):
    """runtime-packages.txt against the built broker."""

    def test_list_is_what_the_binary_derives(self) -> None:
        committed = ds.runtime_packages("list")
        derived = ds.runtime_packages("derive", BROKER)
        self.assertEqual(
            sorted(committed), sorted(derived),
            "deploy/docker/runtime-packages.txt no longer matches the broker's libraries; "
            "regenerate it with: deploy/docker/runtime-packages derive build/server/session-broker")

    def test_list_names_each_package_once(self) -> None:
        committed = ds.runtime_packages("list")
        self.assertEqual(len(committed), len(set(committed)), committed)

    def test_every_loaded_library_comes_from_the_list_or_its_dependencies(self) -> None:
        committed = ds.runtime_packages("list")
        packages = installed_packages()
        missing = [p for p in committed if p not in packages]
        self.assertEqual(missing, [], "runtime packages not installed here: the build "
                         "system and the list disagree")
        closure = dependency_closure(committed, packages)
        libraries = [line.split() for line in ds.runtime_packages("ldd", BROKER)]
        self.assertGreater(len(libraries), len(committed), "ldd listed too few libraries")
        outside = [f"{soname} ({pkg})" for soname, _, pkg in libraries if pkg not in closure]
        self.assertEqual(outside, [], "libraries the runtime stage would not install")

    def test_closure_follows_dependencies_beyond_the_list(self) -> None:
        # libpq5 links Kerberos and LDAP, which the list does not name: they
        # must arrive through libpq5's Depends, and the closure must see that.
        packages = installed_packages()
        closure = dependency_closure(["libpq5"], packages)
        self.assertIn("libgssapi-krb5-2", closure)
        self.assertIn("libldap-2.5-0", closure)
        self.assertNotIn("libgssapi-krb5-2", ds.runtime_packages("list"))

    def test_derive_refuses_a_binary_that_does_not_exist(self) -> None:
        result = subprocess.run([ds.RUNTIME_PACKAGES, "derive", "/nonexistent/session-broker"],
                                capture_output=True, text=True)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("no executable at /nonexistent/session-broker", result.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: runtime_libs_test.py PATH_TO_SESSION_BROKER")
    BROKER = sys.argv.pop(1)
    unittest.main(verbosity=2)
