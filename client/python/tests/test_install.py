"""The package installs offline with Debian's pip into a fresh virtual
environment (``--system-site-packages`` for Debian's grpcio and protobuf,
``--no-build-isolation`` so pip builds with Debian's setuptools instead of
downloading one, ``--no-index`` so nothing is fetched: the dependencies,
grpcio and protobuf, are found among Debian's packages), generating its stubs
at build time, and the installed copy works against the broker."""

import os
import shutil
import subprocess
import textwrap

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(os.path.dirname(PACKAGE_ROOT))


def _copy_sources(dest: str) -> str:
    """client/python and proto/ as in a fresh checkout: no generated stubs,
    no build leftovers (pip builds in the source folder)."""
    ignore = shutil.ignore_patterns("v1", "build", "*.egg-info", "__pycache__", ".stubs-*")
    package = os.path.join(dest, "client", "python")
    shutil.copytree(PACKAGE_ROOT, package, ignore=ignore)
    shutil.copytree(os.path.join(REPO_ROOT, "proto"), os.path.join(dest, "proto"))
    return package


def test_pip_installs_the_package_offline_and_it_works(tmp_path, broker_target):
    package = _copy_sources(str(tmp_path / "src"))
    assert not os.path.exists(os.path.join(package, "sessionbroker", "v1"))
    venv = str(tmp_path / "venv")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip",
                    venv], check=True)
    python = os.path.join(venv, "bin", "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-build-isolation", "--no-index",
         package], capture_output=True, text=True, env=env)
    assert install.returncode == 0, install.stdout + install.stderr

    probe = textwrap.dedent("""
        import sys
        from importlib.metadata import entry_points
        import sessionbroker, sessionbroker.dbapi as db
        from sessionbroker.v1 import broker_pb2
        assert sessionbroker.__file__.startswith(sys.prefix), sessionbroker.__file__
        names = {e.name: e.value for e in entry_points(group="sqlalchemy.dialects")}
        assert names["postgresql.sessionbroker"] == \\
            "sessionbroker.sqlalchemy.base:SessionBrokerDialect", names
        assert names["postgresql.sessionbroker_async"] == \\
            "sessionbroker.sqlalchemy.asyncio:AsyncSessionBrokerDialect", names
        conn = db.connect(sys.argv[1])
        cur = conn.cursor()
        cur.execute("SELECT %s::int4 + 1", [41])
        print(cur.fetchone()[0])
        conn.close()
    """)
    # From another folder, so that the source tree is not on sys.path.
    result = subprocess.run([python, "-c", probe, broker_target], capture_output=True,
                            text=True, cwd=str(tmp_path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "42"
