"""Kite Connect simulator: WebSocket feed, REST API, login, order matching, postbacks, faults."""
