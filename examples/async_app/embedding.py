"""A note's embedding, computed here: a hashing vectoriser over its words.

No model is downloaded: each word (lower case) and each pair of adjacent
words is hashed (BLAKE2b, so the same text gives the same vector in every
process, unlike Python's salted ``hash``) to one of ``EMBEDDING_DIM``
dimensions with a sign, counted with a logarithmic weight, and the vector is
scaled to length 1. Notes sharing words end up close in cosine similarity;
a real service would call an embedding model instead and keep the rest.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable

#: Dimensions of the vectors (a few hundred: few collisions for short notes).
EMBEDDING_DIM = 256

_WORD = re.compile(r"\w+")


def embed(texts: Iterable[str]) -> list[float]:
    """The unit vector of ``texts`` (a note's title, body and tags).

    Never the zero vector, which a cosine index refuses: a text without any
    word counts as one word, itself.
    """
    words = [word for text in texts for word in _WORD.findall(text.lower())]
    if not words:
        words = [" ".join(texts).strip() or "-"]
    counts: dict[int, float] = {}
    for feature in [*words, *(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        number = int.from_bytes(digest, "big")
        index, sign = number % EMBEDDING_DIM, 1.0 if number >> 63 else -1.0
        counts[index] = counts.get(index, 0.0) + sign
    vector = [0.0] * EMBEDDING_DIM
    for index, count in counts.items():
        vector[index] = math.copysign(math.log1p(abs(count)), count)
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # every feature cancelled out: fall back on the first one's dimension
        index = int.from_bytes(hashlib.blake2b(words[0].encode(), digest_size=8).digest(), "big") % EMBEDDING_DIM
        vector[index] = 1.0
        return vector
    return [x / norm for x in vector]
