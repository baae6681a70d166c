"""How long windowing takes on a very long history (10,000 turns by default).

Korean turns from bench/memory_data.py, counted once with o200k (the cached state
every stored message reaches). Times, each the median of ``--repeat`` runs:

- ``TurnIndex.first_fitting``: the windowing decision on prefix sums (binary search);
- a new turn on a maintained index (``TurnIndex.extend`` by two messages + the
  decision): what the builder does per turn for a conversation it has seen;
- ``TurnIndex.build``: the prefix sums from cached per-message counts (O(n));
- ``sliding_window``: the whole pure function (index + decision + slicing);
- counting the history from scratch, for comparison (what the cache saves).

    python -m bench.window_speed [--turns 10000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from bench.memory_data import generate

from daehwa.context.tokens import OpenAICounter, message_tokens
from daehwa.context.window import TurnIndex, sliding_window
from daehwa.messages import Message, Role


def history(turns: int) -> list[Message]:
    """``turns`` generated Korean turns after a system prompt."""
    out = [Message(Role.SYSTEM, "당신은 친절한 한국어 비서입니다.")]
    for conversation in generate(seed=5, conversations=turns // 100 + 1, turns=100):
        for turn in conversation.turns:
            seq = len(out)
            out.append(Message(Role.USER, turn.user, id=f"m{seq}", seq=seq))
            out.append(Message(Role.ASSISTANT, turn.assistant, id=f"m{seq + 1}", seq=seq + 1))
            if len(out) > 2 * turns:
                return out
    return out


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    messages = history(args.turns)
    counter = OpenAICounter("o200k_base")
    began = time.perf_counter()
    for message in messages:
        message_tokens(message, counter)
    count_ms = (time.perf_counter() - began) * 1000
    index = TurnIndex.build(messages, counter, 1)
    budget = 4096 - 512
    print(f"{len(index.costs)} turns, {len(messages)} messages, {index.suffix(0)} tokens (o200k)")
    print("| step | median ms |")
    print("|---|---|")
    decide = median_ms(lambda: index.first_fitting(budget), args.repeat)
    print(f"| window decision on prefix sums (TurnIndex.first_fitting) | {decide:.4f} |")
    extra = history(args.repeat * 2 + 10)[1:]
    for message in extra:
        message_tokens(message, counter)
    pool = iter(extra)

    def new_turn() -> int:
        index.extend([next(pool), next(pool)], counter)
        return index.first_fitting(budget)

    turn = median_ms(new_turn, args.repeat)
    print(f"| new turn on a maintained index (extend + decision) | {turn:.4f} |")
    build = median_ms(lambda: TurnIndex.build(messages, counter, 1), args.repeat)
    print(f"| prefix sums from cached counts (TurnIndex.build) | {build:.2f} |")
    whole = median_ms(
        lambda: sliding_window(messages, max_new_tokens=512, limit=4096, counter=counter),
        args.repeat,
    )
    print(f"| sliding_window, whole function, cached counts | {whole:.2f} |")
    print(f"| counting every message from scratch (once) | {count_ms:.1f} |")


if __name__ == "__main__":
    main()
