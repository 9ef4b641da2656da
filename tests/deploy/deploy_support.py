"""Shared helpers for the deploy tests (tests/deploy/*_test.py).

What the broker says about itself (its settings and defaults, from
``session-broker --print-config=env``), the kustomize renderings of
deploy/k8s, and the stages of deploy/docker/Dockerfile, each read one way for
every test. Plain functions over files and subprocesses; no shared state, so
safe to use from any test. Only Debian's /usr/bin/python3 with python3-yaml is
assumed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
K8S_BASE = os.path.join(DEPLOY, "k8s", "base")
K8S_EXAMPLE = os.path.join(DEPLOY, "k8s", "overlays", "example")
DOCKERFILE = os.path.join(DEPLOY, "docker", "Dockerfile")
RUNTIME_PACKAGES = os.path.join(DEPLOY, "docker", "runtime-packages")
YAMLLINT_CONFIG = os.path.join(DEPLOY, ".yamllint.yaml")
# The kustomizations the tests render: the base alone, and the example overlay.
KUSTOMIZATIONS = {"base": K8S_BASE, "example": K8S_EXAMPLE}


def broker_config(broker: str, env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Every variable the broker reads, with its effective value.

    Runs ``BROKER --print-config=env`` with only ENV in the environment and no
    .env file: without ENV the values are the broker's own defaults
    (DATABASE_URL empty). Raises CalledProcessError if the broker refuses a
    value (it exits 2, naming the variable).
    """
    out = subprocess.run([broker, "--print-config=env"], env=dict(env or {}, BROKER_ENV_FILE=""),
                         cwd="/", check=True, capture_output=True, text=True).stdout
    config: Dict[str, str] = {}
    for line in out.splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"unexpected --print-config=env line: {line!r}")
        words = shlex.split(value)
        config[name] = words[0] if words else ""
    if not config:
        raise ValueError("session-broker --print-config=env printed no settings")
    return config


def host_port(address: str) -> Tuple[str, int]:
    """("0.0.0.0", 50051) from "0.0.0.0:50051" (IPv6 hosts in brackets)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {address!r}")
    return host.strip("[]"), int(port)


def kubectl() -> str:
    """The kubectl that renders kustomizations (scripts/install-deps installs one)."""
    path = shutil.which("kubectl")
    if not path:
        raise RuntimeError("kubectl is not installed: run scripts/install-deps "
                           "(Debian's kubernetes-client)")
    return path


def render_text(directory: str) -> str:
    """``kubectl kustomize DIRECTORY``, as YAML text."""
    result = subprocess.run([kubectl(), "kustomize", directory], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return result.stdout


def render(directory: str) -> List[Dict[str, Any]]:
    """The objects ``kubectl kustomize DIRECTORY`` renders."""
    return [doc for doc in yaml.safe_load_all(render_text(directory)) if doc]


def find(objects: List[Dict[str, Any]], kind: str, name: Optional[str] = None) -> Dict[str, Any]:
    """The one object of KIND (and NAME, if given); raises if not exactly one."""
    matches = [o for o in objects
               if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]
    if len(matches) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(matches)}")
    return matches[0]


def load_yaml(path: str) -> Any:
    """One YAML document from PATH."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def env_example_variables() -> List[str]:
    """Variable names .env.example sets or shows (commented-out lines too)."""
    names: List[str] = []
    with open(os.path.join(ROOT, ".env.example"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
            if m and m.group(1) not in names:
                names.append(m.group(1))
    return names


@dataclass
class Instruction:
    """One Dockerfile instruction: keyword, its flags (--from=...), the rest."""
    keyword: str
    flags: Dict[str, str]
    args: str
    line: int

    def text(self) -> str:
        """The instruction as written, normalised to one line."""
        flags = " ".join(f"--{k}={v}" for k, v in sorted(self.flags.items()))
        return " ".join(p for p in (self.keyword, flags, self.args) if p)


@dataclass
class Stage:
    """A Dockerfile stage: its base image, name and instructions after FROM."""
    image: str
    name: str
    instructions: List[Instruction] = field(default_factory=list)


def dockerfile_stages(path: str = DOCKERFILE) -> List[Stage]:
    """The stages of a Dockerfile (comments dropped, continuations joined)."""
    stages: List[Stage] = []
    logical: List[Tuple[int, str]] = []
    pending = ""
    start = 0
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if pending and line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if not pending:
                start = number
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            logical.append((start, pending + line))
            pending = ""
    if pending:
        raise ValueError(f"{path}: the last instruction ends with a backslash")
    for number, text in logical:
        keyword, _, rest = text.strip().partition(" ")
        keyword = keyword.upper()
        flags: Dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            key, _, value = flag[2:].partition("=")
            flags[key] = value
            rest = rest.strip()
        rest = re.sub(r"\s+", " ", rest)
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(image=words[0], name=name))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"{path}:{number}: {keyword} before the first FROM")
        else:
            stages[-1].instructions.append(Instruction(keyword, flags, rest, number))
    return stages


def stage(name: str, path: str = DOCKERFILE) -> Stage:
    """The Dockerfile stage called NAME."""
    for s in dockerfile_stages(path):
        if s.name == name:
            return s
    raise LookupError(f"{path} has no stage named {name}")


def parse_env_instruction(args: str) -> Dict[str, str]:
    """ENV KEY=VALUE [KEY=VALUE...] (the legacy "ENV KEY VALUE" form too)."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def exec_form(args: str) -> List[str]:
    """The JSON array of ENTRYPOINT/CMD ["a", "b"]; raises on the shell form."""
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not the exec form: {args}")
    return value


def runtime_packages(*args: str) -> List[str]:
    """Lines printed by deploy/docker/runtime-packages ARGS..."""
    out = subprocess.run([RUNTIME_PACKAGES, *args], check=True, capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines() if line]
