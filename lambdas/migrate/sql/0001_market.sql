-- Ticks, Greeks and minute bars.
--
-- Ticks and Greeks are partitioned by IST trading day (partitions are created
-- ahead by the persist path and detached by the retention setting). Each row
-- carries the Kinesis identity of the user record it came from: (shard,
-- sequence number, sub-sequence number) for ticks, and the *source tick's*
-- identity for Greeks, so a replayed or recomputed batch writes nothing twice.
-- The primary key leads with (instrument_token, ts) so that one index serves
-- both per-instrument history reads and deduplication: the Kinesis identity
-- determines the whole row (token and ts included), so uniqueness of
-- (token, ts, identity) is exactly uniqueness of the identity. ts is also the
-- partition key, which a partitioned table's unique keys must contain.
--
-- Write-path choices (measured in benchmarks/bench_persist.py): depth is kept
-- as JSON text, not jsonb (jsonb parsing doubled the server's CPU per row),
-- and shard ids compare bytewise (collate "C"), not by locale rules.

create schema if not exists market;

create table market.ticks (
    ts                   timestamptz      not null,  -- exchange_timestamp, else received_at
    instrument_token     bigint           not null,
    underlying           text             not null,
    mode                 text             not null check (mode in ('ltp', 'quote', 'full')),
    last_price           double precision not null,
    last_traded_quantity bigint,
    average_traded_price double precision,
    volume_traded        bigint,
    total_buy_quantity   bigint,
    total_sell_quantity  bigint,
    open                 double precision,
    high                 double precision,
    low                  double precision,
    close                double precision,
    change               double precision,
    last_trade_time      timestamptz,
    oi                   bigint,
    oi_day_high          bigint,
    oi_day_low           bigint,
    exchange_timestamp   timestamptz,
    depth                text,  -- the tick/1 depth object as JSON; cast to jsonb to query
    received_at          timestamptz      not null,
    src_shard            text collate "C" not null,
    src_seq              numeric(48, 0)   not null,
    src_subseq           integer          not null,
    primary key (instrument_token, ts, src_shard, src_seq, src_subseq)
) partition by range (ts);

create table market.greeks (
    ts                 timestamptz      not null,  -- the source tick's ts
    instrument_token   bigint           not null,
    tradingsymbol      text,
    underlying         text             not null,
    expiry             date             not null,
    strike             double precision not null,
    option_type        text             not null check (option_type in ('CE', 'PE')),
    price              double precision not null,
    forward            double precision,
    forward_source     text             not null,
    t_years            double precision not null,
    rate               double precision not null,
    iv                 double precision,
    delta              double precision,
    gamma              double precision,
    theta              double precision,
    vega               double precision,
    rho                double precision,
    theta_per_year     double precision,
    vega_per_unit      double precision,
    rho_per_unit       double precision,
    reason             text,
    computed_at        timestamptz      not null,
    src_shard          text collate "C" not null,
    src_seq            numeric(48, 0)   not null,
    src_subseq         integer          not null,
    primary key (instrument_token, ts, src_shard, src_seq, src_subseq)
) partition by range (ts);

-- One-minute bars over last_price, maintained as ticks are first inserted.
-- open/close are the prices at open_ts/close_ts (earliest/latest tick in the
-- minute), which makes merging two partial aggregates of a minute exact.
-- cum_volume_* are Kite's cumulative day volume at those ticks; a bar's
-- traded volume is derived in market.bars_1m_view.
create table market.bars_1m (
    instrument_token bigint           not null,
    minute           timestamptz      not null,
    open             double precision not null,
    high             double precision not null,
    low              double precision not null,
    close            double precision not null,
    open_ts          timestamptz      not null,
    close_ts         timestamptz      not null,
    cum_volume_open  bigint,
    cum_volume_close bigint,
    oi               bigint,
    tick_count       integer          not null,
    primary key (instrument_token, minute)
) partition by range (minute);

create view market.bars_1m_view as
select
    instrument_token,
    minute,
    open,
    high,
    low,
    close,
    cum_volume_close - coalesce(
        lag(cum_volume_close) over (
            partition by instrument_token, ((minute at time zone 'UTC') + interval '5:30')::date
            order by minute
        ),
        cum_volume_open
    ) as volume,
    oi,
    tick_count
from market.bars_1m;
