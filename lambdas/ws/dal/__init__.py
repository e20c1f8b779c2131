"""DynamoDB and the @connections management API: the WebSocket functions' only I/O."""
