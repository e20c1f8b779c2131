-- Kinesis sequence numbers are decimal strings of up to 128 digits (56 in
-- practice), which numeric(48, 0) could not hold: a real stream's first tick
-- would have failed its batch. Unconstrained numeric keeps the exact value
-- and its order. Partitions and the primary keys follow the parent.

alter table market.ticks alter column src_seq type numeric;
alter table market.greeks alter column src_seq type numeric;
