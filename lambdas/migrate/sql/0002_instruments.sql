-- The instrument registry: one snapshot of Kite's instruments dump per IST day.
--
-- Written by the instruments function after the S3 snapshot object and before
-- the S3 pointer (instruments/current.json). A snapshot's row and all its
-- instruments are written in one transaction, so a reader sees either the
-- whole snapshot or none of it; publishing the same dump again changes
-- nothing, and a different dump for the same day replaces that day's rows.
-- Old days are deleted by the same function (instruments cascade).

create table market.instrument_snapshots (
    snapshot_date date        primary key,
    sha256        text        not null check (sha256 ~ '^[0-9a-f]{64}$'),
    s3_key        text        not null,
    instruments   integer     not null check (instruments >= 0),
    summary       jsonb       not null,  -- ticker_core DumpSummary.as_dict()
    published_at  timestamptz not null
);

create table market.instruments (
    snapshot_date    date             not null
        references market.instrument_snapshots (snapshot_date) on delete cascade,
    instrument_token bigint           not null,
    exchange_token   bigint           not null,
    tradingsymbol    text             not null,
    name             text             not null,
    last_price       double precision not null,
    expiry           date,
    strike           double precision not null,
    tick_size        double precision not null,
    lot_size         integer          not null,
    instrument_type  text             not null check (instrument_type in ('EQ', 'FUT', 'CE', 'PE')),
    segment          text             not null,
    exchange         text             not null,
    underlying       text             not null,  -- the Kinesis partition key (ticker_core rule)
    primary key (snapshot_date, instrument_token)
);

create index instruments_symbol on market.instruments (snapshot_date, exchange, tradingsymbol);
create index instruments_chain on market.instruments (snapshot_date, underlying, expiry, strike)
    where instrument_type in ('CE', 'PE', 'FUT');

-- The latest published day's instruments.
create view market.instruments_current as
select i.*
from market.instruments i
where i.snapshot_date = (select max(snapshot_date) from market.instrument_snapshots);
