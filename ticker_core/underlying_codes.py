"""Token -> underlying for a whole frame at once (numpy): the vectorized companion of the
registry, kept apart so that reading instruments does not load numpy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ticker_core.instruments import InstrumentRegistry

__all__ = ["UNKNOWN_UNDERLYING", "UnderlyingLookup"]

UNKNOWN_UNDERLYING = -1
"""The code :meth:`UnderlyingLookup.codes` gives a token it does not know."""


class UnderlyingLookup:
    """Vectorized token -> underlying for the feed's hot loop.

    Underlyings are numbered by their sorted names (``names[code]``), so codes
    are the same in every process that loads the same dump. Lookups are a
    binary search over a sorted ``uint32`` array; pass ``uint32`` tokens (as the
    wire codec decodes them) to avoid a conversion per call.
    """

    __slots__ = ("_codes", "_names", "_tokens")

    def __init__(self, underlying_by_token: Mapping[int, str]) -> None:
        """Index a token -> underlying mapping (tokens must fit in uint32)."""
        self._names: tuple[str, ...] = tuple(sorted(set(underlying_by_token.values())))
        code_of = {name: code for code, name in enumerate(self._names)}
        tokens = sorted(underlying_by_token)
        self._tokens = np.array(tokens, dtype=np.uint32)
        self._codes = np.array([code_of[underlying_by_token[t]] for t in tokens], dtype=np.int32)
        self._tokens.flags.writeable = False
        self._codes.flags.writeable = False

    @classmethod
    def of(cls, registry: InstrumentRegistry) -> Self:
        """The lookup over every instrument of ``registry``."""
        return cls({i.instrument_token: i.underlying for i in registry.instruments})

    @property
    def names(self) -> tuple[str, ...]:
        """Underlying names; a code is an index into this tuple."""
        return self._names

    def codes(self, tokens: ArrayLike) -> NDArray[np.int32]:
        """The underlying code of each token (same shape), or :data:`UNKNOWN_UNDERLYING`.

        Mask unknown codes before indexing :attr:`names`: ``names[-1]`` is a real
        name in Python, so an unmasked sentinel would pick the last underlying.

        Raises ``TypeError`` for a non-integer array: a float token is a bug upstream.
        """
        queries = np.asarray(tokens)
        if queries.dtype.kind not in "iu":
            raise TypeError(f"tokens must be integers, not {queries.dtype}")
        if self._tokens.size == 0:
            return np.full(queries.shape, UNKNOWN_UNDERLYING, dtype=np.int32)
        slots = np.searchsorted(self._tokens, queries)
        slots = np.minimum(slots, self._tokens.size - 1)
        found = self._tokens[slots] == queries
        return np.where(found, self._codes[slots], np.int32(UNKNOWN_UNDERLYING)).astype(
            np.int32, copy=False
        )
