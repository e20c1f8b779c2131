"""The WebSocket API: authorizer, routes and the fan-out of ticks and Greeks to clients."""
