"""Pure market domain shared by every part of ticker-service.

Kite's wire format, the Kinesis record format, instruments, the NSE calendar
and option math. Depends on the standard library, numpy and scipy only, so the
simulator, the feed container and the Lambdas all speak it identically.
"""
