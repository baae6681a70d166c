"""A deterministic embedder for tests: hashed character bigrams, L2-normalised.

Texts that share syllable pairs score high, which is enough to test ranking,
caching and budgeting without the real embedding model.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence

import numpy as np

from daehwa.context.recall import Vector

DIM = 256


class BigramEmbedder:
    name = "bigram-test"

    def embed(self, texts: Sequence[str]) -> Vector:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            compact = "".join(text.split())
            for a, b in itertools.pairwise(compact):
                out[row, zlib.crc32((a + b).encode()) % DIM] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm:
                out[row] /= norm
        return out
