"""CPU per streamed event: daehwa's Anthropic/Bedrock clients versus the official SDK.

The fake upstream (Anthropic Messages or Bedrock runtime) runs in a child
process, so its CPU is not counted, and streams ``--tokens`` text deltas to each
of ``--streams`` concurrent requests, ``--delay`` seconds apart. This process
reads them with each client in turn and reports its own CPU time
(``time.process_time``) per text event. Clients:

- ``daehwa``: :class:`daehwa.llm.anthropic.AnthropicModel` /
  :class:`daehwa.llm.bedrock.BedrockModel` on the shared pooled HTTP client;
- ``sdk``: ``anthropic.AsyncAnthropic`` / ``AsyncAnthropicBedrock`` with
  ``max_retries=0``, iterating the raw events of ``messages.create(stream=True)``;
- ``sdk-helper``: the SDK's ``messages.stream()`` helper, reading ``text_stream``
  (it accumulates the message as it goes).

It first times one SigV4 signature: botocore's ``SigV4Auth`` versus
:func:`daehwa.llm.sigv4.sign` (no SDK needed for that part: ``--sign-only``).

The SDK is not a dependency of daehwa; install it next to daehwa first::

    .venv/bin/pip install 'anthropic[bedrock]'
    .venv/bin/python -m bench.native_clients --streams 50 --tokens 200 --delay 0.005
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from daehwa.llm.anthropic import AnthropicModel
from daehwa.llm.base import GenerationParams
from daehwa.llm.bedrock import AwsAuth, BedrockModel
from daehwa.llm.http import UpstreamClient
from daehwa.messages import Message, Role

ROOT = Path(__file__).resolve().parent.parent
MODEL = "claude-sonnet-4-5"
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
Reader = Callable[[], Awaitable[int]]


def start_fake(module: str, scenario: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--scenario", scenario],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def measure(streams: int, read: Reader) -> tuple[float, int]:
    """CPU seconds and text events for ``streams`` concurrent reads (after one warm-up)."""
    await read()
    start = time.process_time()
    counts = await asyncio.gather(*(read() for _ in range(streams)))
    return time.process_time() - start, sum(counts)


def daehwa_reader(model: AnthropicModel | BedrockModel) -> Reader:
    messages = [Message(Role.USER, "안녕")]
    params = GenerationParams(max_new_tokens=1024)

    async def read() -> int:
        return len([c async for c in model.stream(messages, params) if c.text])

    return read


def sdk_readers(client: Any, model: str) -> dict[str, Reader]:
    messages = [{"role": "user", "content": "안녕"}]

    async def raw() -> int:
        count = 0
        stream = await client.messages.create(
            model=model, max_tokens=1024, messages=messages, stream=True
        )
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                count += 1
        return count

    async def helper() -> int:
        count = 0
        async with client.messages.stream(
            model=model, max_tokens=1024, messages=messages
        ) as stream:
            async for _ in stream.text_stream:
                count += 1
        return count

    return {"sdk": raw, "sdk-helper": helper}


def time_signing(rounds: int = 2000) -> None:
    """µs per signed request: botocore's signer, then ours, same inputs."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    from daehwa.llm.sigv4 import Credentials, sign

    host = "bedrock-runtime.us-east-1.amazonaws.com"
    path = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream"
    body = '{"messages":[{"role":"user","content":"안녕"}],"max_tokens":512}'.encode() * 20
    headers = {"Content-Type": "application/json", "Accept": "application/vnd.amazon.eventstream"}
    boto = BotoCredentials("AKIDBENCH", "bench-secret", "token")
    ours = Credentials("AKIDBENCH", "bench-secret", "token")

    def with_botocore() -> None:
        request = AWSRequest(method="POST", url=f"https://{host}{path}", data=body, headers=headers)
        SigV4Auth(boto, "bedrock", "us-east-1").add_auth(request)

    def with_daehwa() -> None:
        sign(
            ours,
            region="us-east-1",
            service="bedrock",
            host=host,
            path=path,
            body=body,
            headers=headers,
        )

    for name, fn in (("botocore", with_botocore), ("daehwa", with_daehwa)):
        fn()
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        print(f"SigV4 {name:<9} {(time.perf_counter() - start) / rounds * 1e6:8.1f} µs/request")


async def run(args: argparse.Namespace) -> None:
    time_signing()
    if args.sign_only:
        return
    import anthropic  # not a dependency: see the module docstring

    # Newer SDKs warn about model names they consider old; irrelevant to a CPU benchmark.
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    os.environ.update(KEYS)
    scenario = f"text tokens={args.tokens} delay={args.delay}"
    targets = [
        ("anthropic", "tests.fakes.anthropic_upstream"),
        ("bedrock", "tests.fakes.bedrock_upstream"),
    ]
    print(f"{args.streams} streams x {args.tokens} text events, {args.delay} s apart")
    print(f"{'upstream':<10} {'client':<11} {'events':>7} {'CPU s':>7} {'µs/event':>9}")
    for upstream, module in targets:
        proc, url = start_fake(module, scenario)
        http = UpstreamClient(url, read_timeout=30.0)
        try:
            readers: dict[str, Reader]
            if upstream == "anthropic":
                ours = AnthropicModel("bench", client=http, model=MODEL, api_key="k", base_url=url)
                sdk = anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0)
                readers = {"daehwa": daehwa_reader(ours), **sdk_readers(sdk, MODEL)}
            else:
                auth = AwsAuth("us-east-1")
                ours_br = BedrockModel(
                    "bench", client=http, model=BEDROCK_MODEL, auth=auth, base_url=url
                )
                sdk = anthropic.AsyncAnthropicBedrock(
                    aws_access_key=KEYS["AWS_ACCESS_KEY_ID"],
                    aws_secret_key=KEYS["AWS_SECRET_ACCESS_KEY"],
                    aws_region="us-east-1",
                    base_url=url,
                    max_retries=0,
                )
                readers = {"daehwa": daehwa_reader(ours_br), **sdk_readers(sdk, BEDROCK_MODEL)}
            for name, read in readers.items():
                cpu, events = await measure(args.streams, read)
                per = cpu / events * 1e6 if events else float("nan")
                print(f"{upstream:<10} {name:<11} {events:>7} {cpu:>7.2f} {per:>9.1f}")
            await sdk.close()
        finally:
            await http.aclose()
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--sign-only", action="store_true", help="only time SigV4 signing")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
