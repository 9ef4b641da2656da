"""Alembic environment for the migration test: runs online only, on the
connection the test hands over in config.attributes["connection"] (the
pattern Alembic's cookbook gives for sharing a connection), so the same
migrations run through whichever engine the test chose."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
