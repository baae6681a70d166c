"""Schema migrations of the SQL store, run from code (Alembic under the hood).

``SqlStore.migrate`` calls :func:`upgrade` at start-up, so a new version of
daehwa brings an existing database up to date without losing data.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from daehwa.store.tables import TRIGRAM_INDEX

# An arbitrary constant ("daehwa" in ASCII): the PostgreSQL advisory lock that
# keeps two instances starting together from migrating at the same time.
_MIGRATION_LOCK = 0x646165687761


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of the packaged migrations.

    With ``connection`` the migrations run on it (inside its transaction).
    """
    config = Config()
    config.set_main_option("script_location", "daehwa.store:migrations")
    config.attributes["connection"] = connection
    return config


def include_object(obj: object, name: str | None, type_: str, *_: object) -> bool:
    """Leave the optional PostgreSQL trigram index out of schema comparisons."""
    return not (type_ == "index" and name == TRIGRAM_INDEX)


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the database behind ``connection`` to ``revision`` (default: newest)."""
    if connection.dialect.name == "postgresql":
        # Held until the surrounding transaction ends.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or ``None`` before the first migration."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
