"""Where a secret may travel in clear: loopback only.

An access token rides in a Kite WebSocket handshake URL and in REST
headers; a database password in the PostgreSQL startup. Over TLS they may go
anywhere; over plain ``ws://``/``http://`` (or a database connection without
server authentication) only to this machine, which is what a simulator, the
sandbox and the tests need. One rule, used by every deployable's settings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost"})
#: Plain scheme -> its TLS counterpart.
SECURE_SCHEMES = {"http": "https", "ws": "wss"}


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an IPv4/IPv6 literal) is this machine: 127.0.0.0/8, ::1."""
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_tls_off_loopback(
    url: str, *, schemes: tuple[str, ...], plaintext_hosts: Collection[str] = ()
) -> str:
    """``url`` if it uses TLS, or a plain scheme to a loopback host; otherwise ValueError.

    ``schemes`` are the TLS schemes accepted (``("wss",)`` for a WebSocket
    URL, ``("https",)`` for REST); their plain counterparts pass only to
    loopback, or to a host named in ``plaintext_hosts``: an explicit opt-in
    for a simulator on a private network (a staging stack's kite_sim, whose
    tokens are its own), never a default. The message names the rule, never
    the URL's query (it may hold a token).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in schemes:
        if not parts.hostname:
            raise ValueError(f"{scheme}:// URL without a host")
        return url
    plain = {p for p, secure in SECURE_SCHEMES.items() if secure in schemes}
    if scheme in plain:
        if is_loopback(parts.hostname) or (parts.hostname or "").lower() in {
            h.lower() for h in plaintext_hosts
        }:
            return url
        raise ValueError(
            f"{scheme}:// sends credentials in clear: allowed only to a loopback host, "
            f"not {parts.hostname!r}; use {SECURE_SCHEMES[scheme]}://"
        )
    raise ValueError(f"unsupported scheme {scheme!r}: expected one of {', '.join(schemes)}")
