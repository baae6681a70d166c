"""Figures of the content filter (docs/content-filter.md).

- ``build``: time and memory to build a :class:`ContentFilter` of N words.
- ``scan``: median and p99 of ``ContentFilter.scan`` (normalisation included)
  on a 1,000-character Korean+English message: clean, with three banned words
  (one spread out), and ones that take the slower normalisation paths; each
  also as a multiple of the bare automaton over the clean message, measured in
  the same run (``--stages``: fold, spread-out runs and automaton apart).
- ``automata``: ahocorasick-rs against pyahocorasick on the same words and
  normalised message (pyahocorasick only if installed: it is not a dependency).
- ``stream``: CPU time the :class:`StreamFilter` adds per streamed token, and
  how many characters it holds back after a token.
- ``false positives``: share of clean generated Korean sentences flagged, for
  three spacing policies; ``evasions``: share of disguised forms caught.

Run from the repository root::

    .venv/bin/python -m bench.guard_bench            # everything, 100,000 words
    .venv/bin/python -m bench.guard_bench --quick    # fewer runs
    .venv/bin/python -m bench.guard_bench --stages   # also where a scan's time goes
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ahocorasick_rs import AhoCorasick, Implementation, MatchKind
from bench.guard_data import banned_words, clean_sentences, evasions, mixed_message

from daehwa.guard import SAMPLE_WORDS, ContentFilter, StreamFilter, read_word_files
from daehwa.guard.normalize import MAX_GAP, normalize

INSERTED = ("시발", "ㅂ ㅅ", "f.u.c.k")


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 / 1e6
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and p99 of one call, in microseconds."""
    for _ in range(min(200, runs)):
        fn()
    samples = []
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - start)
    finally:
        gc.enable()
    samples.sort()
    return samples[len(samples) // 2] / 1e3, samples[int(len(samples) * 0.99)] / 1e3


def bench_build(words: list[str]) -> ContentFilter:
    gc.collect()
    before = _rss_mb()
    start = time.perf_counter()
    content_filter = ContentFilter(words)
    elapsed = time.perf_counter() - start
    gc.collect()
    print(f"build: {len(words):,} words in {elapsed:.2f} s, memory +{_rss_mb() - before:.0f} MB")
    return content_filter


def bench_scan(content_filter: ContentFilter, length: int, runs: int) -> None:
    clean = mixed_message(length)
    messages = {
        "clean": clean,
        "3 hits": mixed_message(length, insert=INSERTED),
        # "…" and zero-width spaces change the length: offsets need a map.
        "… and ZWSP": clean.replace(" ", " \u200b", 3).replace(".", "…", 3),
        # Spelled-out jamo take the per-character path.
        "jamo": mixed_message(length, insert=("ㅅㅣㅂㅏㄹ",)),
    }
    # The yardstick in the same run: the bare automaton over the clean message's
    # normalised text (the same automaton scan uses; reporting every occurrence).
    automaton = content_filter._automaton._automaton
    assert automaton is not None
    normalized = normalize(clean).text
    bare, bare_p99 = _timed(
        partial(automaton.find_matches_as_indexes, normalized, overlapping=True), runs
    )
    print(f"bare automaton, clean message: median {bare:6.1f} µs, p99 {bare_p99:7.1f} µs")
    for name, message in messages.items():
        hits = len(content_filter.scan(message))
        median, p99 = _timed(partial(content_filter.scan, message), runs)
        print(
            f"scan {name:10s} ({len(message)} chars, {hits} matches): "
            f"median {median:6.1f} µs, p99 {p99:7.1f} µs ({median / bare:.1f}× the bare automaton)"
        )
    long_message = mixed_message(32_000, insert=INSERTED)
    median, p99 = _timed(partial(content_filter.scan, long_message), max(runs // 50, 20))
    print(f"scan 32,000 chars (the default max message): median {median / 1e3:.2f} ms")
    # The stream filter normalises its (small) window with the joined text.
    median, p99 = _timed(partial(normalize, clean, open_end=True), runs)
    print(f"normalize() of the clean message, joined text (the stream's path): {median:.1f} µs")


def bench_stages(content_filter: ContentFilter, length: int, runs: int) -> None:
    """Where a scan's time goes: each stage timed alone on the clean message."""
    from daehwa.guard.normalize import fold, spread_runs

    message = mixed_message(length)
    folded = fold(message)
    automaton = content_filter._automaton._automaton
    assert automaton is not None
    stages: dict[str, Callable[[], object]] = {
        "fold (per-character folding, offsets)": partial(fold, message),
        "spread-out runs found and joined": partial(spread_runs, folded.text, folded.classes),
        # A new string each time, as in scan: the automaton encodes it to UTF-8 first.
        "automaton, folded text": lambda: automaton.find_matches_as_indexes(
            folded.text + "", overlapping=True
        ),
        "whole scan": partial(content_filter.scan, message),
    }
    for name, fn in stages.items():
        median, p99 = _timed(fn, runs)
        print(f"stage {name:38s} median {median:6.1f} µs, p99 {p99:7.1f} µs")


def bench_automata(words: list[str], length: int, runs: int, *, dfa: bool = False) -> None:
    patterns = sorted({normalize(w).text for w in words})
    text = normalize(mixed_message(length, insert=INSERTED)).text
    rows: list[tuple[str, float, float, float, float]] = []
    kinds = [
        ("ahocorasick-rs contiguous NFA", Implementation.ContiguousNFA),
        ("ahocorasick-rs noncontiguous NFA", Implementation.NoncontiguousNFA),
    ]
    if dfa:
        kinds.append(("ahocorasick-rs DFA", Implementation.DFA))
    for name, implementation in kinds:
        gc.collect()
        before = _rss_mb()
        start = time.perf_counter()
        automaton = AhoCorasick(
            patterns, matchkind=MatchKind.Standard, implementation=implementation
        )
        build = time.perf_counter() - start
        memory = _rss_mb() - before
        median, p99 = _timed(
            partial(automaton.find_matches_as_indexes, text, overlapping=True), runs
        )
        rows.append((name, build, memory, median, p99))
        del automaton
    try:
        import ahocorasick  # type: ignore[import-not-found]  # pyahocorasick, optional
    except ImportError:
        print("automata: pyahocorasick not installed (pip install pyahocorasick to compare)")
    else:
        gc.collect()
        before = _rss_mb()
        start = time.perf_counter()
        py_automaton = ahocorasick.Automaton()
        for index, pattern in enumerate(patterns):
            py_automaton.add_word(pattern, index)
        py_automaton.make_automaton()
        build = time.perf_counter() - start
        memory = _rss_mb() - before
        median, p99 = _timed(lambda: list(py_automaton.iter(text)), max(runs // 10, 50))
        rows.append(("pyahocorasick", build, memory, median, p99))
    for name, build, memory, median, p99 in rows:
        print(
            f"automaton {name:33s} build {build:5.2f} s, +{memory:4.0f} MB, "
            f"scan median {median:7.1f} µs, p99 {p99:7.1f} µs"
        )


def _tokens(text: str, seed: int = 5) -> list[str]:
    """Split like a model's tokenizer roughly does: 1-3 syllables, or a short word piece."""
    import random

    rng = random.Random(seed)
    tokens, i = [], 0
    while i < len(text):
        n = rng.randint(1, 3) if ord(text[i]) > 0x3000 else rng.randint(2, 5)
        tokens.append(text[i : i + n])
        i += n
    return tokens


def bench_stream(content_filter: ContentFilter, repeats: int) -> None:
    reply = mixed_message(4000, seed=11, insert=INSERTED)
    tokens = _tokens(reply)
    expected = content_filter.mask(reply)
    per_token = []
    for _ in range(repeats):
        stream = StreamFilter(content_filter)
        start = time.process_time_ns()
        out = [stream.feed(token) for token in tokens]
        out.append(stream.flush())
        per_token.append((time.process_time_ns() - start) / len(tokens) / 1e3)
        assert "".join(out) == expected
    print(
        f"stream: {len(tokens)} tokens ({len(reply)} chars), CPU per token median "
        f"{statistics.median(per_token):.1f} µs "
        f"(min {min(per_token):.1f}, max {max(per_token):.1f})"
    )
    # What the client waits for: characters held back after each token.
    stream = StreamFilter(content_filter)
    held, first = [], None
    for k, token in enumerate(tokens):
        if stream.feed(token) and first is None:
            first = k + 1
        held.append(stream.held)
    stream.flush()
    print(
        f"stream: characters held after a token, mean {statistics.mean(held):.2f}, "
        f"max {max(held)}; first text released with token {first}"
    )
    # The fake upstream's reply in two-character tokens: its first word is split.
    from tests.fakes.openai_upstream import DEFAULT_TEXT

    stream = StreamFilter(content_filter)
    held, first = [], None
    for k in range(0, len(DEFAULT_TEXT), 2):
        if stream.feed(DEFAULT_TEXT[k : k + 2]) and first is None:
            first = k // 2 + 1
        held.append(stream.held)
    print(
        f"stream, fake upstream reply ({len(held)} tokens of 2 characters): characters held "
        f"after a token, mean {statistics.mean(held):.2f}; first text released with token {first}"
    )


# Separators (not the invisible characters, which normalisation drops anyway).
_SEPARATOR_RUN = re.compile(r"(?:(?![\u00ad\u200b-\u200f\u2060-\u2064\ufeff])[\W\d_])+")


def _policies(content_filter: ContentFilter) -> dict[str, Callable[[str], bool]]:
    """Whether a text is flagged, under three ways of treating spacing."""
    wide = " " * (MAX_GAP + 1)  # gaps too wide to join: no spread-out runs form
    return {
        "no joining": lambda t: bool(content_filter.scan(_SEPARATOR_RUN.sub(wide, t))),
        "single-letter runs": lambda t: bool(content_filter.scan(t)),
        "remove all spaces": lambda t: bool(content_filter.scan(_SEPARATOR_RUN.sub("", t))),
    }


def bench_false_positives(words: Sequence[str], sentences: int) -> None:
    content_filter = ContentFilter(words)
    corpus = clean_sentences(sentences)
    examples = []
    for name, flagged in _policies(content_filter).items():
        hits = [s for s in corpus if flagged(s)]
        print(
            f"false positives [{name}]: {len(hits)} of {len(corpus):,} clean sentences "
            f"({100 * len(hits) / len(corpus):.2f}%)"
        )
        if name == "single-letter runs":
            examples = hits[:5]
    for sentence in examples:
        print(f"    e.g. {sentence!r} → {content_filter.mask(sentence)!r}")
    probes: dict[str, list[str]] = {}
    for word in words:
        for kind, form in evasions(word).items():
            probes.setdefault(kind, []).append(form)
    for name, flagged in _policies(content_filter).items():
        caught = {kind: sum(map(flagged, forms)) for kind, forms in probes.items()}
        total = sum(len(forms) for forms in probes.values())
        detail = ", ".join(f"{kind} {caught[kind]}/{len(forms)}" for kind, forms in probes.items())
        print(f"evasions caught [{name}]: {sum(caught.values())}/{total} ({detail})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=100_000, help="size of the word list")
    parser.add_argument("--length", type=int, default=1000, help="message length, characters")
    parser.add_argument("--runs", type=int, default=5000, help="timed scans per message")
    parser.add_argument("--sentences", type=int, default=20_000, help="clean corpus size")
    parser.add_argument("--quick", action="store_true", help="fewer runs (smoke test)")
    parser.add_argument("--dfa", action="store_true", help="also the DFA (about 250 MB)")
    parser.add_argument("--stages", action="store_true", help="time the stages of a scan")
    args = parser.parse_args(argv)
    runs = 300 if args.quick else args.runs
    sample = read_word_files([SAMPLE_WORDS])
    words = banned_words(args.words - len(sample)) + sample
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    # A yardstick for the machine's speed right now (another process's load shows here).
    yardstick = min(timeit.repeat("sum(range(10**6))", number=3, repeat=5)) / 3 * 1e3
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}, "
        f"sum(range(10**6)) {yardstick:.0f} ms; {args.words:,} words, {args.length}-char message"
    )
    content_filter = bench_build(words)
    bench_scan(content_filter, args.length, runs)
    if args.stages:
        bench_stages(content_filter, args.length, runs)
    bench_automata(words, args.length, runs, dfa=args.dfa)
    bench_stream(content_filter, 5 if args.quick else 30)
    bench_false_positives(sample, 2000 if args.quick else args.sentences)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
