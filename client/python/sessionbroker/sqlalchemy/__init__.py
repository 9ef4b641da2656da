"""SQLAlchemy dialects for the session broker.

``postgresql+sessionbroker`` (sessionbroker.sqlalchemy.base) runs over the
synchronous DB-API module ``sessionbroker.dbapi``;
``postgresql+sessionbroker_async`` (sessionbroker.sqlalchemy.asyncio) runs
over ``sessionbroker.aio`` for ``sqlalchemy.ext.asyncio``.

Both are registered with SQLAlchemy when this package is imported, for use
from a source tree, and through the ``sqlalchemy.dialects`` entry points of
the installed distribution (pyproject.toml), so that ``create_engine`` finds
them without an import. Registration only records module and class names;
nothing is imported until an engine asks for the dialect. Thread-safe.
"""

from sqlalchemy.dialects import registry

from .base import SessionBrokerDialect

registry.register(
    "postgresql.sessionbroker",
    "sessionbroker.sqlalchemy.base",
    "SessionBrokerDialect",
)
registry.register(
    "postgresql.sessionbroker_async",
    "sessionbroker.sqlalchemy.asyncio",
    "AsyncSessionBrokerDialect",
)

__all__ = ["SessionBrokerDialect"]
