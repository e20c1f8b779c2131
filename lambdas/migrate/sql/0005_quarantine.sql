-- What the persist function could not store, and why: one row per user record.
--
-- A user record that breaks its schema or a column's bounds (decoder poison), or
-- a row the database itself refused (a constraint, a detached day partition), is
-- kept here, in the same transaction as the good rows of its batch, instead of
-- being retried: a record that can never be stored would only hold up its shard.
-- `data` is the user record's bytes as they arrived (for a Kinesis record that
-- could not be de-aggregated, the whole record, with src_subseq -1), so it can be
-- read, fixed and replayed. The identity is the stream's: a redelivered batch
-- quarantines nothing twice. Rows stay until an operator deletes them; the
-- Poison_<reason> metrics say when any arrive.
--
--   select reason, count(*), min(quarantined_at) from market.quarantine group by reason;
--   select convert_from(data, 'UTF8'), detail from market.quarantine where reason = '...';

create table market.quarantine (
    stream_arn     text collate "C" not null,  -- the event source (ticks or greeks stream)
    src_shard      text collate "C" not null,
    src_seq        text collate "C" not null,  -- as the event named it, even if malformed
    src_subseq     bigint           not null,  -- -1: the whole Kinesis record
    partition_key  text,
    reason         text             not null,  -- bad_json, bad_field, out_of_range, ...
    detail         text             not null,
    data           bytea            not null,
    quarantined_at timestamptz      not null default now(),
    primary key (stream_arn, src_shard, src_seq, src_subseq)
);

create index quarantine_by_time on market.quarantine (quarantined_at);

-- greeks/1 allows null strike, price, t_years and rate (reason nan_input); the
-- table refused such rows, so a valid record could never be stored.
alter table market.greeks
    alter column strike drop not null,
    alter column price drop not null,
    alter column t_years drop not null,
    alter column rate drop not null;
