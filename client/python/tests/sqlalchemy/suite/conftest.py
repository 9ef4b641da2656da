"""Bootstraps SQLAlchemy's pytest plugin for its dialect compliance suite
(README.dialects.rst in SQLAlchemy's source), after sb_suite_plugin has
started a broker for it. Registering the dialect happens on import of
sessionbroker.sqlalchemy."""

import os
import sys

import pytest

# The package from the source tree (client/python).
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

import sessionbroker.sqlalchemy  # noqa: E402,F401  (registers the dialects)

pytest_plugins = ["sb_suite_plugin"]

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403
