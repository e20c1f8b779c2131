-- The order lifecycle: every intent, Kite's answer to it, and every later update.
--
-- order_intents: written by the API before Kite is called (at most once per
-- user, idempotency key, operation and basket item), then updated with what
-- Kite answered. kite_tag is the tag the order carries at Kite (derived from
-- the key), so an ambiguous answer is resolved by finding the tag in the book.
--
-- order_updates: each state an order went through, from Kite's postbacks, the
-- feed's WebSocket order messages and the API's own reads. One update is
-- identified by (account, order id, update time, status, filled quantity):
-- Kite's order id and update time, refined by what changed at that time
-- (Kite's timestamps have one-second resolution, and an order can open and
-- fill within one second). The same update arriving by postback and by
-- WebSocket is stored once. published_at is set once the update has been put
-- on the EventBridge bus (an outbox: unpublished rows are retried).
--
-- orders: the latest known state of each order (the update with the latest
-- time wins; a later-arriving older update changes nothing).

create schema if not exists trading;

create table trading.order_intents (
    intent_id       bigint generated always as identity primary key,
    user_id         text        not null,
    account_id      text        not null,
    idempotency_key text        not null,
    operation       text        not null
        check (operation in ('place', 'modify', 'cancel', 'exit', 'gtt_create')),
    item            integer     not null default 0 check (item >= 0),
    kite_tag        text,
    request         jsonb       not null,
    status          text        not null
        check (status in ('sent', 'accepted', 'refused', 'not_sent', 'unknown')),
    order_id        text,
    trigger_id      bigint,
    error_code      text,
    error_message   text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (user_id, idempotency_key, operation, item)
);
create index order_intents_tag on trading.order_intents (account_id, kite_tag);
create index order_intents_order on trading.order_intents (account_id, order_id);

create table trading.order_updates (
    account_id      text        not null,
    order_id        text        not null,
    update_time     timestamptz not null,
    status          text        not null,
    filled_quantity numeric     not null,
    source          text        not null
        check (source in ('api', 'postback', 'websocket', 'order_book')),
    payload         jsonb       not null,
    received_at     timestamptz not null default now(),
    published_at    timestamptz,
    primary key (account_id, order_id, update_time, status, filled_quantity)
);
create index order_updates_unpublished on trading.order_updates (received_at)
    where published_at is null;

create table trading.orders (
    account_id       text        not null,
    order_id         text        not null,
    status           text        not null,
    tag              text,
    exchange         text,
    tradingsymbol    text,
    transaction_type text,
    quantity         numeric,
    filled_quantity  numeric,
    last_update_at   timestamptz not null,
    state            jsonb       not null,
    primary key (account_id, order_id)
);
