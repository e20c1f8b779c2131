"""The feed reads the instruments function's published snapshot from S3 (moto)."""

from __future__ import annotations

from datetime import date

import boto3
import pytest

from feed_container.instruments import load_registry, source_from_setting
from lambdas.instruments.dal import S3SnapshotStore
from sandbox.moto_server import AwsEndpoint
from testkit.factories import chain, index_instrument, publish_snapshot
from ticker_adapters.settings import SnapshotSettings
from ticker_core.instruments import write_instruments_csv

pytestmark = pytest.mark.integration


async def test_the_published_snapshot_is_the_feeds_instruments(aws: AwsEndpoint) -> None:
    # Given the instruments function published today's dump
    s3 = boto3.client("s3", **aws.client_kwargs())
    s3.create_bucket(Bucket="refdata", CreateBucketConfiguration={"LocationConstraint": aws.region})
    rows = [
        index_instrument("NIFTY 50", 1001),
        *chain(
            "NIFTY", date(2026, 12, 29), [24000.0, 24050.0], first_exchange_token=35000, future=True
        ),
    ]
    publish_snapshot(
        S3SnapshotStore(s3, "refdata", "instruments/"),
        write_instruments_csv(rows).encode(),
        date(2026, 12, 1),
    )
    # When the feed loads its instruments from the snapshot's prefix
    snapshot = SnapshotSettings(bucket="refdata", prefix="instruments/")
    source = source_from_setting("snapshot", kite_rest_url="", snapshot=snapshot, s3_client=s3)
    registry = await load_registry(source)
    # Then it has every instrument, with the partition keys the records use
    assert len(registry) == len(rows)
    assert registry.underlying_of(rows[0].instrument_token) == "NIFTY"
