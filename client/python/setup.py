"""setuptools hook: generates the gRPC stubs from ../../proto while building.

Everything else about the package is in pyproject.toml. ``build_py`` writes
``sessionbroker/v1/broker_pb2*.py`` into the build directory (never into the
source tree), so an installed package carries its stubs and the repository
never holds generated code.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sessionbroker import _codegen  # noqa: E402  (imports nothing generated)


class BuildPyWithStubs(build_py):
    """build_py that also generates the stubs into build_lib."""

    def run(self) -> None:
        super().run()
        if not self.dry_run:
            _codegen.generate(out_dir=self.build_lib, force=True)


setup(cmdclass={"build_py": BuildPyWithStubs})
