"""Adapters and helpers every Lambda shares: observability, env models, secrets, db pool."""
