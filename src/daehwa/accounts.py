"""Users and their credentials: API keys, passwords, browser sessions, login links.

Every secret is stored as a hash only. API keys and tokens are random and
long, so a plain SHA-256 is enough; passwords use scrypt with a per-user salt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from daehwa.errors import AuthError, Conflict, InvalidInput
from daehwa.messages import User, new_id, utcnow
from daehwa.store.base import Store

KEY_PREFIX = "dh-"
LOGIN_LINK_TTL = timedelta(minutes=15)
# How long a key -> user lookup is remembered; a revoked key stops working within this time.
KEY_CACHE_SECONDS = 5.0
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_secret(secret: str) -> str:
    """The stored form of an API key or token."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str = KEY_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


@dataclass(slots=True, frozen=True)
class NewUser:
    user: User
    api_key: str


class Accounts:
    """Creates users and turns credentials into users."""

    def __init__(self, store: Store, *, session_days: float = 30.0) -> None:
        self.store = store
        self.session_ttl = timedelta(days=session_days)
        self._cache: dict[tuple[str, str], tuple[float, User]] = {}

    async def create_user(
        self, name: str, *, admin: bool = False, password: str | None = None
    ) -> NewUser:
        name = name.strip()
        if not name or len(name) > 64:
            raise InvalidInput("a user name is 1 to 64 characters", field="name")
        if await self.store.get_user_by_name(name) is not None:
            raise Conflict(f"user {name!r} already exists")
        password_hash = None
        if password is not None:
            if len(password) < 8:
                raise InvalidInput("a password has at least 8 characters", field="password")
            password_hash = await asyncio.to_thread(hash_password, password)
        user = await self.store.create_user(
            User(id=new_id(), name=name, is_admin=admin, password_hash=password_hash)
        )
        key = new_secret()
        await self.store.add_key(user.id, hash_secret(key), kind="api")
        return NewUser(user, key)

    async def new_api_key(self, user: User) -> str:
        key = new_secret()
        await self.store.add_key(user.id, hash_secret(key), kind="api")
        return key

    async def user_for(self, secret: str, *, kind: str = "api") -> User:
        """The user a credential belongs to; AuthError when unknown, revoked or expired."""
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._cache.get((kind, digest))
        if cached is not None and cached[0] > now:
            return cached[1]
        user = await self.store.user_for_key(digest, kind=kind)
        if user is None:
            self._cache.pop((kind, digest), None)
            raise AuthError("invalid or revoked credentials")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(kind, digest)] = (now + KEY_CACHE_SECONDS, user)
        return user

    def forget(self, user_id: str) -> None:
        """Drop cached lookups of a deleted user, so their credentials stop at once."""
        for key in [k for k, (_, user) in self._cache.items() if user.id == user_id]:
            del self._cache[key]

    async def revoke(self, secret: str, *, kind: str = "api") -> None:
        digest = hash_secret(secret)
        self._cache.pop((kind, digest), None)
        await self.store.revoke_key(digest)

    async def login_with_password(self, name: str, password: str) -> User:
        user = await self.store.get_user_by_name(name)
        ok = (
            user is not None
            and user.password_hash is not None
            and await asyncio.to_thread(verify_password, password, user.password_hash)
        )
        if not ok or user is None:
            raise AuthError("wrong user name or password")
        return user

    async def start_session(self, user: User) -> str:
        """A new browser session token for the cookie."""
        token = new_secret("s-")
        await self.store.add_key(
            user.id, hash_secret(token), kind="session", expires_at=utcnow() + self.session_ttl
        )
        return token

    async def login_link_token(self, user: User) -> str:
        """A one-time token for a login link (valid for 15 minutes)."""
        token = new_secret("l-")
        await self.store.add_key(
            user.id, hash_secret(token), kind="login", expires_at=utcnow() + LOGIN_LINK_TTL
        )
        return token

    async def redeem_login_link(self, token: str) -> User:
        """Exchange a login-link token for its user; the token is revoked at once."""
        digest = hash_secret(token)
        user = await self.store.user_for_key(digest, kind="login")
        if user is None:
            raise AuthError("this login link is invalid, used or expired")
        await self.store.revoke_key(digest)
        return user
