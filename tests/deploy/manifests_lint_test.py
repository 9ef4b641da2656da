#!/usr/bin/python3
"""yamllint passes on every YAML file of deploy/ and on kustomize's output.

Runs ``yamllint --strict`` (warnings fail too) with deploy/.yamllint.yaml on
the deploy/ tree and on what ``kubectl kustomize`` renders for the base and
the example overlay. Usage: manifests_lint_test.py (ctest label deploy).
"""
from __future__ import annotations

import shutil
import subprocess
import unittest

import deploy_support as ds


# For kustomize's output: deploy/'s rules except line length, which only
# says how kubectl wraps the long alert descriptions.
RENDERED_CONFIG = f"""extends: {ds.YAMLLINT_CONFIG}
rules:
  line-length: disable
"""


def yamllint(*args: str, stdin: str = "", rendered: bool = False) -> subprocess.CompletedProcess:
    """yamllint --strict with deploy/'s config (RENDERED_CONFIG if RENDERED)."""
    exe = shutil.which("yamllint")
    if not exe:
        raise RuntimeError("yamllint is not installed: run scripts/install-deps")
    config = ["-d", RENDERED_CONFIG] if rendered else ["-c", ds.YAMLLINT_CONFIG]
    return subprocess.run([exe, "--strict", "-f", "parsable", *config, *args],
                          input=stdin, capture_output=True, text=True)


class YamlLintTest(unittest.TestCase):
    """deploy/'s YAML is clean."""

    def test_deploy_tree_is_clean(self) -> None:
        result = yamllint(ds.DEPLOY)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_kustomize_output_is_clean(self) -> None:
        for name, path in ds.KUSTOMIZATIONS.items():
            with self.subTest(kustomization=name):
                result = yamllint("-", stdin=ds.render_text(path), rendered=True)
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_lint_catches_a_duplicated_key(self) -> None:
        # The configs are really in force: a defect yamllint's defaults reject.
        for rendered in (False, True):
            result = yamllint("-", stdin="a: 1\na: 2\n", rendered=rendered)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("duplication of key", result.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
