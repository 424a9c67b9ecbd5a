-- Server-side subscription: consumer groups, each product's subscriptions,
-- and every group's backlog of messages not yet accepted.
CREATE TABLE consumer_groups (
    group_id    TEXT PRIMARY KEY,
    group_name  TEXT NOT NULL UNIQUE,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE subscriptions (
    product_key      TEXT NOT NULL,
    kind             TEXT NOT NULL,
    flags            TEXT NOT NULL,
    group_ids        TEXT NOT NULL,
    mns              TEXT,
    subscribe_flags  TEXT,
    created_ms       BIGINT NOT NULL,
    PRIMARY KEY (product_key, kind)
);
CREATE TABLE amqp_backlog (
    group_id     TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    key          TEXT NOT NULL,
    topic        TEXT NOT NULL,
    message_id   BIGINT NOT NULL,
    generate_ms  BIGINT NOT NULL,
    body         BYTEA NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE INDEX amqp_backlog_by_age ON amqp_backlog (generate_ms);
