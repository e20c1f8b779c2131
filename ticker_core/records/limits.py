"""Kinesis Data Streams limits the record codec packs against.

Sizes are in bytes and count what Kinesis counts: a record's data blob plus
its partition key (UTF-8), never the explicit hash key. They are the service
limits from the PutRecords API reference; a value one byte over any of them is
rejected by Kinesis, so the batcher treats each as inclusive.
"""

from typing import Final

MIB: Final = 1024 * 1024

MAX_RECORD_BYTES: Final = 1 * MIB
"""One Kinesis record: data blob + partition key."""

MAX_REQUEST_RECORDS: Final = 500
"""Entries in one PutRecords request."""

MAX_REQUEST_BYTES: Final = 5 * MIB
"""One PutRecords request: the sum of every entry's data blob + partition key."""

MAX_PARTITION_KEY_CHARS: Final = 256
"""Partition keys are 1 to 256 Unicode characters."""

MAX_EXPLICIT_HASH_KEY: Final = 2**128 - 1
"""Explicit hash keys are decimal integers in the 128-bit hash key space."""

DEFAULT_AGGREGATE_BYTES: Final = 50 * 1024
"""Default target size of one aggregated record (data + partition key).

The KPL's own default (AggregationMaxSize = 51200). Smaller than the 1 MiB a
record may hold because a shard takes 1 MiB/s: many 50 KiB records spread a
hot underlying's writes across the second instead of one record eating the
whole budget, a throttled retry resends 50 KiB rather than 1 MiB, and a
Lambda reporting a failed batch item replays at most that much.
"""
