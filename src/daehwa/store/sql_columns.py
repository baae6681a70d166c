"""The select lists of the SQL store's queries, the same text on SQLite and PostgreSQL.

Each names the columns of :mod:`daehwa.store.rows` in the order its row
converters expect.
"""

from __future__ import annotations

from daehwa.store.rows import CONVERSATION_COLUMNS, MESSAGE_COLUMNS, USER_COLUMNS

CONVERSATION = ", ".join(CONVERSATION_COLUMNS)
MESSAGE = ", ".join(MESSAGE_COLUMNS)
USER = ", ".join(USER_COLUMNS)
# A user's columns in a query that joins another table.
USER_OF_KEY = ", ".join(f"users.{c}" for c in USER_COLUMNS)
