"""An SQLite store URL read without SQLAlchemy.

SQLAlchemy (~11 MB at rest once imported) parses every other store URL; an
SQLite store needs only its file's path, read here with the same pattern as
``sqlalchemy.engine.make_url`` so that both give the same path.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# sqlalchemy.engine.url._parse_url's pattern.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


def sqlite_database(url: str) -> str | None:
    """The database of an ``sqlite[+driver]://`` URL ("" for none); ``None`` for any other URL."""
    found = _URL.match(url)
    if found is None or found["name"].split("+")[0] != "sqlite":
        return None
    return unquote(found["database"] or "")
