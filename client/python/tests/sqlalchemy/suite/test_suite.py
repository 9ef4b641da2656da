"""SQLAlchemy's dialect compliance suite, as shipped in python3-sqlalchemy,
run whole against postgresql+sessionbroker; sb_requirements says which
features the dialect has."""

from sqlalchemy.testing.suite import *  # noqa: F401,F403
