#!/usr/bin/python3
"""Every Kubernetes manifest, and what kustomize renders, passes the schemas.

The schemas are the Kubernetes API's and the Prometheus Operator CRDs' OpenAPI
schemas as the npm packages kubernetes-models and
@kubernetes-models/prometheus-operator ship them (deploy/k8s/validate, pinned
by its package-lock.json). This test installs them with ``npm ci`` into
BUILD_DIR/deploy/node (again only when the lock file or Node's major version
changed; npm's cache makes reruns offline), renders deploy/k8s/base and the
example overlay with ``kubectl kustomize``, and runs validate.js on the
rendered objects and on each manifest file as written. A self-check feeds it
broken objects first, so a validator that accepts anything fails here.

Usage: manifests_schema_test.py BUILD_DIR (ctest label deploy).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from typing import Any, Dict, List

import yaml

import deploy_support as ds

BUILD_DIR = ""
VALIDATE_DIR = os.path.join(ds.DEPLOY, "k8s", "validate")


def node_modules() -> str:
    """BUILD_DIR/deploy/node/node_modules, installed by npm ci when stale."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        raise RuntimeError("node and npm are needed: run scripts/install-deps")
    version = subprocess.run([node, "--version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        raise RuntimeError(f"Node {version} is too old: deploy/k8s/validate needs 18 or later")
    digest = hashlib.sha256(version.split(".")[0].encode())
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(VALIDATE_DIR, name), "rb") as f:
            digest.update(f.read())
    stamp_value = digest.hexdigest()
    target = os.path.join(BUILD_DIR, "deploy", "node")
    stamp = os.path.join(target, ".npm-ci-stamp")
    modules = os.path.join(target, "node_modules")
    if os.path.exists(stamp) and open(stamp).read() == stamp_value and os.path.isdir(modules):
        return modules
    os.makedirs(target, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(os.path.join(VALIDATE_DIR, name), target)
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                            cwd=target, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"npm ci in {target} failed:\n{result.stdout}\n{result.stderr}")
    with open(stamp, "w") as f:
        f.write(stamp_value)
    return modules


def validate(objects_by_file: Dict[str, List[Dict[str, Any]]]) -> subprocess.CompletedProcess:
    """Runs validate.js on OBJECTS_BY_FILE (name -> objects), each as a JSON file."""
    tmp = tempfile.mkdtemp(prefix="sb-validate-")
    try:
        paths = []
        for name, objects in objects_by_file.items():
            path = os.path.join(tmp, name + ".json")
            with open(path, "w") as f:
                json.dump(objects, f)
            paths.append(path)
        env = dict(os.environ, NODE_PATH=MODULES)
        return subprocess.run(["node", os.path.join(VALIDATE_DIR, "validate.js"), *paths],
                              env=env, capture_output=True, text=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


MODULES = ""


class SchemaValidationTest(unittest.TestCase):
    """deploy/k8s against the OpenAPI schemas."""

    def assert_all_valid(self, objects_by_file: Dict[str, List[Dict[str, Any]]]) -> None:
        result = validate(objects_by_file)
        count = sum(len(o) for o in objects_by_file.values())
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"{count} valid, 0 invalid", result.stdout)

    def test_validator_rejects_broken_and_unknown_objects(self) -> None:
        broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"replicas": "two", "template": {}}}
        unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "y"}}
        result = validate({"broken": [broken, unknown]})
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("/spec/replicas must be integer", result.stdout)
        self.assertIn("/spec must have required property selector", result.stdout)
        self.assertIn("no schema for example.com/v1 Gadget", result.stdout)
        self.assertIn("0 valid, 2 invalid", result.stdout)

    def test_rendered_base_and_example_overlay_are_valid(self) -> None:
        rendered = {name: ds.render(path) for name, path in ds.KUSTOMIZATIONS.items()}
        for name, objects in rendered.items():
            self.assertGreaterEqual(len(objects), 7, f"{name} rendered too few objects")
        self.assert_all_valid(rendered)

    def test_every_manifest_file_is_valid_as_written(self) -> None:
        files = sorted(p for p in glob.glob(os.path.join(ds.DEPLOY, "k8s", "**", "*.yaml"),
                                            recursive=True)
                       if os.path.basename(p) != "kustomization.yaml"
                       and "node_modules" not in p)
        self.assertGreaterEqual(len(files), 10)
        objects = {}
        for path in files:
            with open(path, encoding="utf-8") as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
            objects[os.path.relpath(path, ds.DEPLOY).replace("/", "_")] = docs
        self.assert_all_valid(objects)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: manifests_schema_test.py BUILD_DIR")
    BUILD_DIR = os.path.abspath(sys.argv.pop(1))
    MODULES = node_modules()
    unittest.main(verbosity=2)
