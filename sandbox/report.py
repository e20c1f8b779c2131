"""The end-of-run consistency report: was anything lost or duplicated, and where.

Three independent witnesses are compared:

- the simulator's exact count of tick packets it sent, per instrument;
- the Kinesis streams themselves, read from TRIM_HORIZON on every shard and
  de-aggregated (``ticks``: every user record, with its identity (shard,
  sequence number, sub-sequence number) and a digest of its bytes, so a tick
  put twice shows as a duplicate; ``greeks``: every record's source tick,
  deduplicated, since a retried Greeks batch may publish a row again);
- PostgreSQL, grouped by Kinesis record, so every row is matched to exactly
  one user record.

Ticks are complete when, per instrument, the simulator's count equals the
distinct ticks in Kinesis with no duplicates, and the rows of
``market.ticks`` are exactly the stream's user records. Greeks are complete
when ``market.greeks`` holds exactly one row per distinct source in the
``greeks`` stream and every option tick on ``ticks`` has its Greeks. Anything
else is named, per instrument where it can be.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ticker_core.records import deaggregate

Identity = tuple[str, int, int]  # shard id, sequence number, sub-sequence number
RecordKey = tuple[str, int]  # shard id, sequence number
TOKEN_FIELD = re.compile(rb'"instrument_token":\s*(\d+)')
EXAMPLES = 5


# -- what each witness saw ----------------------------------------------------------------


@dataclass
class TickScan:
    """The ``ticks`` stream, de-aggregated."""

    kinesis_records: int = 0
    user_records: int = 0
    per_token: Counter[int] = field(default_factory=Counter)  # distinct ticks per instrument
    duplicates: Counter[int] = field(default_factory=Counter)  # repeated payloads per instrument
    record_sizes: dict[RecordKey, int] = field(default_factory=dict)
    option_ticks: set[Identity] = field(default_factory=set)
    unreadable: int = 0
    _seen: set[bytes] = field(default_factory=set, repr=False)

    def add(self, key: RecordKey, datas: list[bytes], option_tokens: set[int]) -> None:
        """One Kinesis record's user records, in order."""
        self.kinesis_records += 1
        self.record_sizes[key] = len(datas)
        for sub, data in enumerate(datas):
            self.user_records += 1
            match = TOKEN_FIELD.search(data)
            if match is None:
                self.unreadable += 1
                continue
            token = int(match.group(1))
            digest = hashlib.blake2b(data, digest_size=12).digest()
            if digest in self._seen:
                self.duplicates[token] += 1
                continue
            self._seen.add(digest)
            self.per_token[token] += 1
            if token in option_tokens:
                self.option_ticks.add((key[0], key[1], sub))


@dataclass
class GreeksScan:
    """The ``greeks`` stream, de-aggregated and deduplicated by source tick."""

    kinesis_records: int = 0
    user_records: int = 0
    sources: set[Identity] = field(default_factory=set)
    per_token: Counter[int] = field(default_factory=Counter)
    republished: int = 0  # the same source's Greeks published again (a retried batch)
    unreadable: int = 0

    def add(self, datas: list[bytes]) -> None:
        """One Kinesis record's user records."""
        self.kinesis_records += 1
        for data in datas:
            self.user_records += 1
            try:
                record = json.loads(data)
                source = record["source"]
                identity = (
                    str(source["shard_id"]),
                    int(source["sequence_number"]),
                    int(source["sub_sequence_number"]),
                )
                token = int(record["instrument_token"])
            except (ValueError, KeyError, TypeError):
                self.unreadable += 1
                continue
            if identity in self.sources:
                self.republished += 1
                continue
            self.sources.add(identity)
            self.per_token[token] += 1


@dataclass
class TableScan:
    """A PostgreSQL table's rows, by the Kinesis record they came from."""

    rows: int = 0
    per_token: Counter[int] = field(default_factory=Counter)
    groups: dict[RecordKey, list[int]] = field(default_factory=dict)  # sorted sub-sequences


# -- the report ---------------------------------------------------------------------------


@dataclass
class Totals:
    """The headline numbers."""

    ticks_sent_by_simulator: int
    kinesis_tick_records: int
    ticks_in_kinesis: int
    distinct_ticks_in_kinesis: int
    tick_rows_in_postgres: int
    option_ticks_in_kinesis: int
    kinesis_greeks_records: int
    greeks_in_kinesis: int
    distinct_greeks_in_kinesis: int
    greeks_rows_in_postgres: int
    on_failure_batches: int


@dataclass
class Report:
    """Verdict, totals, and every discrepancy found."""

    verdict: str
    totals: Totals
    problems: list[str]
    details: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.verdict == "complete"

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "totals": asdict(self.totals),
            "problems": self.problems,
            "details": self.details,
            "run": self.run,
        }


def _per_token_text(counts: Mapping[int, int], labels: Mapping[int, str]) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = [f"{labels.get(t, t)} ({t}): {n}" for t, n in items[:10]]
    more = f", and {len(items) - 10} more instruments" if len(items) > 10 else ""
    return ", ".join(shown) + more


def _compare_groups(
    expected: Mapping[RecordKey, Iterable[int]], found: Mapping[RecordKey, list[int]]
) -> tuple[list[Identity], list[Identity]]:
    """(expected but absent, present but unexpected) identities."""
    missing: list[Identity] = []
    extra: list[Identity] = []
    for key, subs in expected.items():
        want = set(subs)
        have = Counter(found.get(key, []))
        missing += [(key[0], key[1], s) for s in sorted(want - set(have))]
        extra += [(key[0], key[1], s) for s in sorted(set(have) - want)]
        extra += [(key[0], key[1], s) for s, n in sorted(have.items()) for _ in range(n - 1)]
    for key, subs_found in found.items():
        if key not in expected:
            extra += [(key[0], key[1], s) for s in subs_found]
    return missing, extra


def _ids(identities: Iterable[Identity]) -> list[str]:
    return [f"{shard}:{seq}#{sub}" for shard, seq, sub in list(identities)[:EXAMPLES]]


def _group(identities: Iterable[Identity]) -> dict[RecordKey, list[int]]:
    grouped: dict[RecordKey, list[int]] = {}
    for shard, seq, sub in identities:
        grouped.setdefault((shard, seq), []).append(sub)
    return grouped


def build_report(
    *,
    sent_per_token: Mapping[int, int],
    ticks: TickScan,
    tick_rows: TableScan,
    greeks: GreeksScan,
    greeks_rows: TableScan,
    on_failure_batches: int = 0,
    greeks_for_every_option_tick: bool = True,
    labels: Mapping[int, str] | None = None,
    run_problems: Iterable[str] = (),
) -> Report:
    """Compare the witnesses; the verdict is ``complete`` only if nothing is off anywhere."""
    labels = labels or {}
    problems: list[str] = []
    details: dict[str, Any] = {}

    # Simulator -> Kinesis, per instrument.
    tokens = set(sent_per_token) | set(ticks.per_token)
    not_in_kinesis = {
        t: sent_per_token.get(t, 0) - ticks.per_token.get(t, 0)
        for t in tokens
        if sent_per_token.get(t, 0) > ticks.per_token.get(t, 0)
    }
    unexpected = {
        t: ticks.per_token.get(t, 0) - sent_per_token.get(t, 0)
        for t in tokens
        if ticks.per_token.get(t, 0) > sent_per_token.get(t, 0)
    }
    duplicated = {t: n for t, n in ticks.duplicates.items() if n}
    if not_in_kinesis:
        total = sum(not_in_kinesis.values())
        problems.append(
            f"ticks: {total} sent by the simulator are not in Kinesis: "
            + _per_token_text(not_in_kinesis, labels)
        )
    if unexpected:
        problems.append(
            f"ticks: {sum(unexpected.values())} in Kinesis beyond what the simulator sent: "
            + _per_token_text(unexpected, labels)
        )
    if duplicated:
        problems.append(
            f"ticks: {sum(duplicated.values())} duplicated in Kinesis: "
            + _per_token_text(duplicated, labels)
        )
    if ticks.unreadable:
        problems.append(f"ticks: {ticks.unreadable} user records in Kinesis name no instrument")
    details["ticks_not_in_kinesis"] = {str(t): n for t, n in sorted(not_in_kinesis.items())}
    details["ticks_unexpected_in_kinesis"] = {str(t): n for t, n in sorted(unexpected.items())}
    details["ticks_duplicated_in_kinesis"] = {str(t): n for t, n in sorted(duplicated.items())}

    # Kinesis -> PostgreSQL, by identity.
    expected_ticks = {key: range(n) for key, n in ticks.record_sizes.items()}
    missing, extra = _compare_groups(expected_ticks, tick_rows.groups)
    if missing:
        problems.append(
            f"ticks: {len(missing)} user records in Kinesis have no row in market.ticks "
            f"(e.g. {', '.join(_ids(missing))})"
        )
    if extra:
        problems.append(
            f"ticks: {len(extra)} rows in market.ticks match no user record in Kinesis "
            f"(e.g. {', '.join(_ids(extra))})"
        )
    details["tick_rows_missing"] = {"count": len(missing), "examples": _ids(missing)}
    details["tick_rows_unexpected"] = {"count": len(extra), "examples": _ids(extra)}

    # Greeks: the stream (deduplicated by source) -> PostgreSQL, and option ticks -> Greeks.
    g_missing, g_extra = _compare_groups(_group(greeks.sources), greeks_rows.groups)
    if g_missing:
        problems.append(
            f"greeks: {len(g_missing)} distinct Greeks in Kinesis have no row in market.greeks "
            f"(e.g. {', '.join(_ids(g_missing))})"
        )
    if g_extra:
        problems.append(
            f"greeks: {len(g_extra)} rows in market.greeks match no Greeks record in Kinesis "
            f"(e.g. {', '.join(_ids(g_extra))})"
        )
    if greeks.unreadable:
        problems.append(f"greeks: {greeks.unreadable} user records in Kinesis are unreadable")
    without = ticks.option_ticks - greeks.sources if greeks_for_every_option_tick else set()
    orphans = greeks.sources - ticks.option_ticks
    if without:
        problems.append(
            f"greeks: {len(without)} option ticks in Kinesis have no Greeks "
            f"(e.g. {', '.join(_ids(sorted(without)))})"
        )
    if orphans:
        problems.append(
            f"greeks: {len(orphans)} Greeks name a source that is no option tick in Kinesis "
            f"(e.g. {', '.join(_ids(sorted(orphans)))})"
        )
    details["greeks_rows_missing"] = {"count": len(g_missing), "examples": _ids(g_missing)}
    details["greeks_rows_unexpected"] = {"count": len(g_extra), "examples": _ids(g_extra)}
    details["option_ticks_without_greeks"] = {
        "count": len(without),
        "examples": _ids(sorted(without)),
    }
    details["greeks_republished"] = greeks.republished
    if on_failure_batches:
        problems.append(
            f"{on_failure_batches} batches were discarded to an on-failure queue after retries"
        )

    totals = Totals(
        ticks_sent_by_simulator=sum(sent_per_token.values()),
        kinesis_tick_records=ticks.kinesis_records,
        ticks_in_kinesis=ticks.user_records,
        distinct_ticks_in_kinesis=sum(ticks.per_token.values()),
        tick_rows_in_postgres=tick_rows.rows,
        option_ticks_in_kinesis=len(ticks.option_ticks),
        kinesis_greeks_records=greeks.kinesis_records,
        greeks_in_kinesis=greeks.user_records,
        distinct_greeks_in_kinesis=len(greeks.sources),
        greeks_rows_in_postgres=greeks_rows.rows,
        on_failure_batches=on_failure_batches,
    )
    problems += list(run_problems)
    if totals.ticks_sent_by_simulator == 0:
        problems.append("ticks: the simulator sent nothing; there is nothing to vouch for")
    verdict = "complete" if not problems else "incomplete"
    return Report(verdict, totals, problems, details)


# -- reading the witnesses ----------------------------------------------------------------


def read_stream(kinesis: Any, stream_name: str) -> Iterator[tuple[str, str, str, bytes]]:
    """Every record of every shard from TRIM_HORIZON: (shard, sequence, partition key, data)."""
    shards = kinesis.list_shards(StreamName=stream_name)["Shards"]
    for shard in shards:
        shard_id = shard["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in page["Records"]:
                yield shard_id, record["SequenceNumber"], record["PartitionKey"], record["Data"]
            iterator = page.get("NextShardIterator")
            if not page["Records"] and not page.get("MillisBehindLatest"):
                break


def scan_ticks(kinesis: Any, stream_name: str, option_tokens: set[int]) -> TickScan:
    """The ``ticks`` stream's user records."""
    scan = TickScan()
    for shard_id, sequence, partition_key, data in read_stream(kinesis, stream_name):
        datas = [u.data for u in deaggregate(data, partition_key)]
        scan.add((shard_id, int(sequence)), datas, option_tokens)
    return scan


def scan_greeks(kinesis: Any, stream_name: str) -> GreeksScan:
    """The ``greeks`` stream's user records."""
    scan = GreeksScan()
    for _shard_id, _sequence, partition_key, data in read_stream(kinesis, stream_name):
        scan.add([u.data for u in deaggregate(data, partition_key)])
    return scan


GROUPED_BY_RECORD = {
    "ticks": "select src_shard, src_seq::text as seq, array_agg(src_subseq order by src_subseq)"
    " as subs from market.ticks group by 1, 2",
    "greeks": "select src_shard, src_seq::text as seq, array_agg(src_subseq order by src_subseq)"
    " as subs from market.greeks group by 1, 2",
}
PER_TOKEN = {
    "ticks": "select instrument_token, count(*) as n from market.ticks group by 1",
    "greeks": "select instrument_token, count(*) as n from market.greeks group by 1",
}


async def scan_table(conn: Any, table: str) -> TableScan:
    """``market.ticks`` or ``market.greeks`` grouped by source Kinesis record."""
    if table not in GROUPED_BY_RECORD:
        raise ValueError(f"no such table {table!r}")
    scan = TableScan()
    rows = await conn.fetch(GROUPED_BY_RECORD[table])
    for row in rows:
        subs = list(row["subs"])
        scan.groups[(row["src_shard"], int(row["seq"]))] = subs
        scan.rows += len(subs)
    per_token = await conn.fetch(PER_TOKEN[table])
    scan.per_token = Counter({int(r["instrument_token"]): int(r["n"]) for r in per_token})
    return scan


# -- presentation -------------------------------------------------------------------------


def api_call_lines(calls: dict[str, int]) -> list[str]:
    """API calls by route and status, from ``"METHOD /resource STATUS": count`` (the gateway's)."""
    if not calls:
        return []
    by_route: dict[str, dict[str, int]] = {}
    for key, count in calls.items():
        route, _, status = key.rpartition(" ")
        by_route.setdefault(route, {})[status] = by_route.get(route, {}).get(status, 0) + count
    lines = [f"API calls by route and status   {sum(calls.values()):>12,}"]
    for route in sorted(by_route, key=lambda r: (r.split(" ", 1)[-1], r)):
        statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(by_route[route].items()))
        lines.append(f"  {route:<52} {statuses}")
    return lines


def market_lines(market: dict[str, Any]) -> list[str]:
    """The option chain read through the API at the end of the run."""
    if not market:
        return []
    if market.get("option_chain_status") != 200:
        return [
            f"option chain through the API    HTTP {market.get('option_chain_status')} "
            f"{market.get('option_chain_code')}"
        ]
    return [
        f"option chain {market['underlying']} {market['expiry']}   {market['strikes']:>9,} strikes"
        f"   ({market['options_priced']:,} options priced, {market['options_with_iv']:,} with IV;"
        f" forward {market['forward']} from {market['forward_source']}, ATM {market['atm_strike']})"
    ]


def render(report: Report, path: str | None = None) -> str:
    """The report as text for the terminal."""
    t = report.totals
    lines = [
        "",
        "=== ticker-service sandbox: end-of-run report ===",
        f"ticks sent by the simulator     {t.ticks_sent_by_simulator:>12,}",
        f"ticks in Kinesis 'ticks'        {t.ticks_in_kinesis:>12,}"
        f"   ({t.kinesis_tick_records:,} Kinesis records, "
        f"{t.ticks_in_kinesis - t.distinct_ticks_in_kinesis:,} duplicates)",
        f"tick rows in PostgreSQL         {t.tick_rows_in_postgres:>12,}",
        f"option ticks                    {t.option_ticks_in_kinesis:>12,}",
        f"Greeks in Kinesis 'greeks'      {t.greeks_in_kinesis:>12,}"
        f"   ({t.distinct_greeks_in_kinesis:,} distinct sources, "
        f"{t.greeks_in_kinesis - t.distinct_greeks_in_kinesis:,} republished by retries)",
        f"Greeks rows in PostgreSQL       {t.greeks_rows_in_postgres:>12,}",
        f"batches sent to on-failure      {t.on_failure_batches:>12,}",
    ]
    orders = report.run.get("orders")
    if orders:
        burst = orders.get("burst_orders") or []
        lines += [
            f"orders placed through the API   {orders['orders_placed']:>12,}"
            f"   ({orders['intents']:,} intents recorded)",
            f"orders filled / rejected        {orders['orders_filled']:>12,} /"
            f" {orders['orders_rejected']:,}",
            f"duplicate burst                 {orders['burst_requests']:>12,} requests"
            f" -> {sum(burst):,} order(s), {orders['duplicate_orders']:,} duplicates"
            f" ({orders['burst_statuses']})",
            f"order updates stored            {orders['order_updates_stored']:>12,}"
            f"   ({orders['order_updates_by_postback']:,} first by postback,"
            f" {orders['order_updates_by_websocket']:,} first by the WebSocket;"
            f" {orders['order_updates_unpublished']:,} not yet on the bus)",
        ]
        queue = orders.get("order_updates_queue")
        if queue:
            lines.append(
                f"WebSocket order messages (SQS)  {queue['consumed']:>12,} consumed"
                f"   ({queue['stored']:,.0f} stored, {queue['duplicates']:,.0f} already stored,"
                f" {queue['rejected']:,.0f} unusable; {queue['dead_letters']:,} dead letters)"
            )
        lines += api_call_lines(orders.get("api_calls") or {})
    lines += market_lines(report.run.get("market") or {})
    witness = (report.run.get("websocket") or {}).get("witness")
    if witness:
        lines.append(
            f"WebSocket client messages       {witness['messages']:>12,}"
            f"   ({witness['tick_records']:,} ticks, {witness['greeks_records']:,} Greeks"
            f" of {witness['instruments_subscribed']:,} instruments subscribed)"
        )
    if report.complete:
        lines.append("verdict: COMPLETE - nothing lost, nothing duplicated")
    else:
        lines.append("verdict: INCOMPLETE")
        lines += [f"  - {p}" for p in report.problems]
    for note in report.run.get("notes", []):
        lines.append(f"note: {note}")
    if path:
        lines.append(f"report written to {path}")
    return "\n".join(lines)
