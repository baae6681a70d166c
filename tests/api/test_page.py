"""The chat page is served with a strict security policy; the API is not affected."""

from __future__ import annotations

import pytest

from daehwa.api.app import WEB_DIR
from tests.api.conftest import ServerFactory

pytestmark = pytest.mark.skipif(
    not (WEB_DIR / "index.html").is_file(), reason="the chat page is not in this tree"
)


async def test_page_and_assets_carry_the_policy(make_server: ServerFactory) -> None:
    server = await make_server()
    async with server.http.get(server.url + "/") as response:
        assert response.status == 200
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
    async with server.http.get(server.url + "/static/index.html") as response:
        assert response.status == 200
        assert "content-security-policy" in response.headers
    async with server.http.get(server.url + "/healthz") as response:
        assert "content-security-policy" not in response.headers
