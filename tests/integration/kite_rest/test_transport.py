"""The Kite client when the peer misbehaves: refused, reset, silent, or not Kite at all.

What matters to a caller placing an order: a failure says whether the
request can have reached Kite (:class:`KiteNotSentError` vs
:class:`KiteOutcomeUnknownError`), a write is never sent twice, and a read
is retried only as far as the injected policy says.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.kite_rest.peers import RecordingServer, RefusingPort, Reply, SocketPeer
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport, retry_transient
from ticker_adapters.retry import no_delays
from ticker_core.kite_errors import (
    KiteError,
    KiteNetworkError,
    KiteNotSentError,
    KiteOutcomeUnknownError,
    KiteTokenError,
)

pytestmark = pytest.mark.integration


def client(url: str, *, attempts: int = 3, read_timeout: float = 5.0) -> KiteRestClient:
    transport = KiteTransport(
        url,
        connect_timeout=2,
        read_timeout=read_timeout,
        retry=retry_transient(attempts),
        delays=no_delays,
    )
    return KiteRestClient("key", "token", transport=transport)


def place(kite: KiteRestClient) -> str:
    return kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "LIMIT", price=1.0, tag="t")


def test_a_refused_connection_is_not_sent() -> None:
    with RefusingPort() as port:
        kite = client(port.url)
        # When a write and a read find nobody listening, Then both say: not sent
        with pytest.raises(KiteNotSentError):
            place(kite)
        with pytest.raises(KiteNotSentError) as read:
            kite.orders()
    assert read.value.http_status is None
    assert isinstance(read.value, KiteNetworkError)


def test_a_reset_after_the_request_is_outcome_unknown_and_a_write_is_not_repeated() -> None:
    with SocketPeer("reset") as peer:
        kite = client(peer.url, attempts=3)
        # When Kite's end resets the connection after reading an order placement
        with pytest.raises(KiteOutcomeUnknownError):
            place(kite)
        # Then the order was sent exactly once
        assert peer.requests_seen == 1
        # When a read meets the same, Then it is tried the three times the policy allows
        with pytest.raises(KiteOutcomeUnknownError):
            kite.orders()
        assert peer.requests_seen == 4


def test_a_read_timeout_on_a_write_is_outcome_unknown_and_not_retried() -> None:
    with SocketPeer("silent") as peer:
        kite = client(peer.url, attempts=3, read_timeout=0.3)
        with pytest.raises(KiteOutcomeUnknownError) as unknown:
            kite.cancel_order("regular", "1")
        assert peer.requests_seen == 1
        assert "DELETE /orders/regular/1" in unknown.value.message


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as running:
        yield running


def test_a_gateway_page_is_a_network_error_retried_for_reads_only(server: RecordingServer) -> None:
    # Given a proxy answering 502 with HTML
    server.reply = Reply(status=502, content_type="text/html", body=b"<html>bad gateway</html>")
    kite = client(server.url, attempts=3)
    # When a read is made, Then it is tried three times and fails typed
    with pytest.raises(KiteNetworkError) as read:
        kite.positions()
    assert (read.value.http_status, len(server.take())) == (502, 3)
    # When a write is made, Then it is sent once
    with pytest.raises(KiteNetworkError):
        place(kite)
    assert [r.method for r in server.take()] == ["POST"]


def test_the_injected_policy_decides_and_the_injected_delays_are_slept(
    server: RecordingServer,
) -> None:
    # Given Kite answering NetworkException, a policy that records what it is asked
    server.reply = Reply.error(503, "NetworkException", "OMS unreachable")
    asked: list[tuple[str, int]] = []
    slept: list[float] = []

    def policy(error: KiteError, attempts_made: int) -> bool:
        asked.append((type(error).__name__, attempts_made))
        return attempts_made < 4

    made: list[int] = []

    def delays() -> Iterator[float]:
        made.append(1)
        yield from (0.001, 0.002, 0.003)

    transport = KiteTransport(server.url, retry=policy, delays=delays, sleep=slept.append)
    # When a read fails every time
    with pytest.raises(KiteNetworkError):
        KiteRestClient("key", "token", transport=transport).holdings()
    # Then the policy was asked after each attempt, one delay sequence served the operation
    assert asked == [("KiteNetworkError", n) for n in (1, 2, 3, 4)]
    assert (slept, made, len(server.take())) == ([0.001, 0.002, 0.003], [1], 4)


def test_a_refused_token_is_not_retried(server: RecordingServer) -> None:
    server.reply = Reply.error(403, "TokenException", "Incorrect `api_key` or `access_token`.")
    with pytest.raises(KiteTokenError):
        client(server.url, attempts=3).profile()
    assert len(server.take()) == 1


def test_no_authorization_without_a_session_and_the_token_is_never_shown(
    server: RecordingServer,
) -> None:
    server.reply = Reply(content_type="text/csv", body=b"instrument_token\n1\n")
    anonymous = KiteRestClient("", transport=KiteTransport(server.url))
    assert anonymous.instruments() == b"instrument_token\n1\n"
    (request,) = server.take()
    assert request.header("Authorization") is None
    assert request.header("Accept-Encoding") == "gzip"
    assert "secret-token" not in repr(KiteRestClient("key", "secret-token"))


def test_an_answer_of_the_wrong_kind_is_a_data_error(server: RecordingServer) -> None:
    from ticker_core.kite_errors import KiteDataError

    kite = client(server.url)
    server.reply = Reply.data({"not": "a list"})
    with pytest.raises(KiteDataError):
        kite.orders()
    server.reply = Reply.data([])
    with pytest.raises(KiteDataError):
        kite.instruments()
    server.reply = Reply(content_type="text/csv", body=b"a\n")
    with pytest.raises(KiteDataError):
        kite.profile()
    server.reply = Reply.data({"status": "ok"})
    with pytest.raises(KiteDataError, match="order_id"):
        place(kite)
