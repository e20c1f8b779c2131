"""Types of the compiled record formatter (``_recordfmt.c``)."""

from typing import Any

def format_rows(
    literals: tuple[bytes, ...], kinds: bytes, columns: tuple[list[Any], ...], rows: int, /
) -> list[bytes]:
    """One record per row: literals around each slot's value (``d``, ``r``, ``s``, ``p``)."""
