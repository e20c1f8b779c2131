-- Depth is stored positionally from here on: {"buy": [[price, quantity, orders], ...],
-- "sell": [...]}, the tick/1 level objects without their repeated key names. Depth
-- is most of a full tick's row, and its bytes most of the server's work per row
-- (benchmarks/bench_persist.py). The best bid, say:
--   (depth::jsonb #>> '{buy,0,0}')::float8
comment on column market.ticks.depth is
    'market depth as JSON: {"buy": [[price, quantity, orders], ...], "sell": [...]}';

-- Bars are rewritten in place by every batch that touches their minute. Partitions
-- of market.bars_1m are created with free space on each page (PartitionManager,
-- fillfactor 50) so those updates stay on the page (HOT) and leave the index alone.
comment on table market.bars_1m is
    'one-minute bars, merged batch by batch from new ticks (partitions: fillfactor 50)';
