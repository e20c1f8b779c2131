"""Kite's REST routes and the admin API, one module per area, registered by :mod:`kite_sim.app`."""
