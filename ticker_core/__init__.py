"""Pure market domain shared by every part of ticker-service.

Kite's vocabulary (``kite``: modes, limits, segments, token expiry), its wire
format (``kite_wire``), the Kinesis record format (``records``), instruments,
the subscription rules, the NSE calendar, India Standard Time (``tz``) and
option math. Depends on the standard library, numpy and scipy (option math
only), so the simulator, the feed container and the Lambdas all speak it
identically; it imports no other package of the project.
"""
