"""Memory fidelity: are facts from long ago still in the context when asked about?

Generated long Korean conversations (bench/memory_data.py: 120-160 turns, five facts
planted in the first half, distractor facts about other people, questions about each
fact asked at the end). For each question the context is assembled under a budget
(default: o200k counting, limit 2,048 tokens, 256 reserved for the reply) by each
strategy, and a fact counts as present when its message is in the context or its
sentence is in the summary. Also reports the context-building time per question
(``ContextBuilder.assemble`` with counts and message embeddings already cached, as
in steady state; the new question's embedding is included).

The summary is written by a rule-based extractive stand-in (it keeps the user's
first-person sentences): no LLM runs here, so the summary rows measure the pipeline,
not a model's summarising skill.

    python -m bench.memory_fidelity [--conversations 10] [--seed 7] [--limit 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from bench.memory_data import Conversation as Generated
from bench.memory_data import generate

from daehwa.config import ModelSettings
from daehwa.context.builder import ContextBuilder
from daehwa.context.recall import E5Embedder, Recall, Vector
from daehwa.context.summary import Summariser
from daehwa.context.tokens import counter_for, message_tokens
from daehwa.llm.base import Chunk, GenerationParams
from daehwa.messages import Conversation, Message, Role
from daehwa.store.memory import MemoryStore

_FIRST_PERSON = re.compile(r"(^|\s)(나는|난|내가|내|나|우리|제가|제)\s")


class ExtractiveSummaryModel:
    """Stand-in summariser: keeps the previous summary plus the user's first-person lines."""

    name = "extractive"

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        prompt = messages[-1].content
        previous = prompt.split("이전 요약:\n", 1)[1].split("\n\n새 대화:", 1)[0]
        new = prompt.split("새 대화:\n", 1)[1].rsplit("\n\n갱신된 요약:", 1)[0]
        lines = [] if previous.strip() == "(없음)" else previous.splitlines()
        for line in new.splitlines():
            if line.startswith("사용자: ") and _FIRST_PERSON.search(line[5:]):
                lines.append("- " + line[5:])
        yield Chunk(text="\n".join(lines))
        yield Chunk(finish_reason="stop")

    async def aclose(self) -> None:
        return None


class TextMemoEmbedder:
    """Wraps an embedder with a cache by text while ``memo`` is on.

    Generated data repeats filler lines; the memo is on only while the history is
    pre-embedded, so each timed build still embeds its question for real.
    """

    def __init__(self, inner: E5Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.memo = True
        self._memo: dict[str, Vector] = {}

    def embed(self, texts: Sequence[str]) -> Vector:
        if not self.memo:
            return self.inner.embed(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            for text, vector in zip(todo, self.inner.embed(todo), strict=True):
                self._memo[text] = vector
        return np.stack([self._memo[t] for t in texts])


@dataclass
class Tally:
    """Results of one strategy."""

    present: int = 0
    asked: int = 0
    via: dict[str, int] = field(default_factory=lambda: {"window": 0, "recall": 0, "summary": 0})
    times_ms: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def to_messages(
    generated: Generated, question: str, tag: str
) -> tuple[list[Message], list[Message]]:
    """Stored-like messages for the conversation plus the question; and the fact messages.

    Ids are ``{tag}-{seq}``: unique per conversation, as real message ids are.
    """
    messages: list[Message] = []
    facts: list[Message] = []
    for turn in generated.turns:
        seq = len(messages) + 1
        user = Message(Role.USER, turn.user, id=f"{tag}-{seq}", seq=seq)
        messages += [
            user,
            Message(Role.ASSISTANT, turn.assistant, id=f"{tag}-{seq + 1}", seq=seq + 1),
        ]
        if turn.fact:
            facts.append(user)
    seq = len(messages) + 1
    messages.append(Message(Role.USER, question, id=f"{tag}-{seq}", seq=seq))
    return messages, facts


async def summarised(messages: list[Message], builder: ContextBuilder, model: ModelSettings) -> str:
    """The summary the running summariser would hold at question time."""
    store = MemoryStore()
    conv = await store.create_conversation(Conversation(id="c", user_id="u"))
    for m in messages[:-1]:
        await store.append_message(Message(m.role, m.content, conversation_id="c"))
    plain = ContextBuilder(use_summary=False)
    built = plain.assemble(
        system_prompt=SYSTEM,
        conversation=conv,
        history=messages,
        limit=model.context_window,
        max_new_tokens=model.max_new_tokens,
        counter=counter_for(model),
    )
    summariser = builder.summariser
    assert summariser is not None
    updated = await summariser.maybe_update(conv, built.dropped, store)
    return updated.summary if updated else ""


SYSTEM = (
    "당신은 친절하고 정확한 한국어 AI 비서입니다. "
    "사용자의 질문에 한국어로 간결하고 명확하게 답하세요."
)


async def run(args: argparse.Namespace) -> None:
    model = ModelSettings(
        provider="openai",
        model=args.model,
        context_window=args.limit,
        max_new_tokens=args.max_new,
    )
    counter = counter_for(model)
    embedder = TextMemoEmbedder(E5Embedder(threads=1))
    recall = Recall(embedder)
    summariser = Summariser(lambda c: ExtractiveSummaryModel(), max_tokens=400, counter=counter)
    strategies = {
        "window": ContextBuilder(use_summary=False),
        "window + summary": ContextBuilder(summariser=summariser),
        "window + recall": ContextBuilder(recall=recall, use_summary=False),
        "window + summary + recall": ContextBuilder(recall=recall, summariser=summariser),
    }
    tallies = {name: Tally() for name in strategies}
    data = generate(seed=args.seed, conversations=args.conversations)
    started = time.perf_counter()
    turns = sum(len(c.turns) for c in data)
    for number, generated in enumerate(data):
        base, _ = to_messages(generated, "", f"c{number}")
        # Steady state: every stored message already has its embedding (after_turn did it).
        embedder.memo = True
        recall.ensure(base[:-1])
        summary_text = await summarised(base, strategies["window + summary"], model)
        for asked, question in enumerate(generated.questions):
            messages, facts = to_messages(generated, question.text, f"c{number}q{asked}")
            embedder.memo = True
            recall.ensure(messages[:-1])
            embedder.memo = False
            for message in messages[:-1]:  # stored messages carry their counts
                message_tokens(message, counter)
            fact = next(m for m in facts if question.value in m.content)
            conv = Conversation(id="c", user_id="u", summary=summary_text, summary_seq=10**9)
            for name, builder in strategies.items():
                tally = tallies[name]
                began = time.perf_counter()
                built = builder.assemble(
                    system_prompt=SYSTEM,
                    conversation=conv,
                    history=messages,
                    limit=model.context_window,
                    max_new_tokens=model.max_new_tokens,
                    counter=counter,
                )
                tally.times_ms.append((time.perf_counter() - began) * 1000)
                tally.tokens.append(built.input_tokens)
                tally.asked += 1
                ids = {m.id for m in built.messages}
                summary_on = builder.use_summary and built.steps["summary_tokens"] > 0
                if fact.id in ids:
                    tally.present += 1
                    recalled = any(m.id == fact.id for m in built.recalled)
                    tally.via["recall" if recalled else "window"] += 1
                elif summary_on and fact.content in summary_text:
                    tally.present += 1
                    tally.via["summary"] += 1
    elapsed = time.perf_counter() - started
    print(
        f"{len(data)} conversations, {turns} turns, {tallies['window'].asked} questions; "
        f"counter {counter.name}, limit {args.limit}, max_new {args.max_new}; "
        f"{elapsed:.0f} s in all"
    )
    print(
        "| strategy | facts in context | via window / recall / summary "
        "| input tokens (mean) | build ms (median / p95) |"
    )
    print("|---|---|---|---|---|")
    for name, t in tallies.items():
        share = t.present / t.asked
        times = sorted(t.times_ms)
        p95 = times[int(0.95 * (len(times) - 1))]
        via = f"{t.via['window']} / {t.via['recall']} / {t.via['summary']}"
        print(
            f"| {name} | {t.present}/{t.asked} = {share:.0%} | {via} "
            f"| {statistics.mean(t.tokens):.0f} | {statistics.median(times):.2f} / {p95:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=2048)
    parser.add_argument("--max-new", type=int, default=256)
    parser.add_argument("--model", default="gpt-4o", help="decides the token counter")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
