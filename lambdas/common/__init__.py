"""Lambda-only helpers: Powertools wiring, the loop runner, the database pool, Kinesis batches."""
