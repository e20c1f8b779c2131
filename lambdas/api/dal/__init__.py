"""The API function's storage: grants, the order limiter and idempotency (DynamoDB), the
order lifecycle (PostgreSQL) and order-update events (EventBridge)."""
