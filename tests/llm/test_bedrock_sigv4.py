"""Our SigV4 signer against botocore's, byte for byte, on the same inputs and clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore import auth as botocore_auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials as BotoCredentials  # type: ignore[import-untyped]

from daehwa.llm.sigv4 import Credentials, sign

NOW = datetime(2025, 5, 1, 9, 30, 15, tzinfo=UTC)
HEADERS = {"Content-Type": "application/json", "Accept": "application/vnd.amazon.eventstream"}


@pytest.mark.parametrize("token", [None, "session-token/with+chars="])
@pytest.mark.parametrize(
    ("host", "path"),
    [
        (
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream",
        ),
        (
            "127.0.0.1:8443",
            "/prefix/model/arn%3Aaws%3Abedrock%2Fprofile/invoke-with-response-stream",
        ),
    ],
)
def test_same_signature_as_botocore(
    monkeypatch: pytest.MonkeyPatch, token: str | None, host: str, path: str
) -> None:
    body = '{"messages":[{"role":"user","content":"안녕  하세요"}]}'.encode()
    monkeypatch.setattr(
        botocore_auth, "get_current_datetime", lambda *a, **k: NOW.replace(tzinfo=None)
    )
    request = AWSRequest(method="POST", url=f"https://{host}{path}", data=body, headers=HEADERS)
    botocore_auth.SigV4Auth(
        BotoCredentials("AKID", "SECRET/key+", token), "bedrock", "eu-west-1"
    ).add_auth(request)
    expected = {k: v for k, v in request.headers.items()}

    ours = sign(
        Credentials("AKID", "SECRET/key+", token),
        region="eu-west-1",
        service="bedrock",
        host=host,
        path=path,
        body=body,
        headers=HEADERS,
        now=NOW,
    )
    assert ours == expected


def test_extra_headers_are_signed_except_user_agent() -> None:
    headers = {**HEADERS, "User-Agent": "x", "X-Custom": "  a   b "}
    out = sign(
        Credentials("AKID", "S"),
        region="us-east-1",
        service="bedrock",
        host="h",
        path="/p",
        body=b"",
        headers=headers,
        now=NOW,
    )
    assert "SignedHeaders=accept;content-type;host;x-amz-date;x-custom," in out["Authorization"]
    assert out["X-Amz-Date"] == "20250501T093015Z"
