"""Alembic migrations of the SQL store (see daehwa.store.migrate)."""
