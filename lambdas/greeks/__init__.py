"""The greeks Lambda: option ticks from the ``ticks`` stream to IV and Greeks on ``greeks``."""
