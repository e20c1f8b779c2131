"""The Fargate feed service: Kite WebSocket pool -> validated, KPL-aggregated ticks -> Kinesis."""
