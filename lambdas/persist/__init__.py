"""The persist Lambda: ticks and Greeks from Kinesis into PostgreSQL, exactly once per record."""
