"""sessionbroker: Python clients of the PostgreSQL session broker.

- ``sessionbroker.dbapi``: a PEP 249 (DB-API 2.0) driver; a connection is a
  broker session.
- ``sessionbroker.aio``: the same over asyncio (grpc.aio).
- ``sessionbroker.sqlalchemy``: the ``postgresql+sessionbroker`` dialect.
- ``sessionbroker.v1``: the generated gRPC stubs (built from proto/).

Importing this package imports nothing else, so the stub generator
(``sessionbroker._codegen``) runs before the stubs exist.
"""

__version__ = "0.1.0"
