"""The content filter: Aho-Corasick over a banned-word list, Korean-aware, stream-safe.

>>> from daehwa.guard import ContentFilter, StreamFilter
>>> f = ContentFilter(["바보"])
>>> f.mask("넌 바.보 같아")
'넌 *** 같아'
>>> s = StreamFilter(f)
>>> s.feed("넌 바") + s.feed(".보 같아") + s.flush()
'넌 *** 같아'
"""

from daehwa.guard.filter import MASK_CHAR, ContentFilter, Match, apply_mask
from daehwa.guard.policy import BLOCKED_MESSAGE, ContentGuard, InputVerdict
from daehwa.guard.stream import StreamFilter
from daehwa.guard.wordlist import SAMPLE_WORDS, FilterHolder, read_word_files

__all__ = [
    "BLOCKED_MESSAGE",
    "MASK_CHAR",
    "SAMPLE_WORDS",
    "ContentFilter",
    "ContentGuard",
    "FilterHolder",
    "InputVerdict",
    "Match",
    "StreamFilter",
    "apply_mask",
    "read_word_files",
]
