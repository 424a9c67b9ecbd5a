-- What several nodes on one database share.
--
-- Every registry change (not presence) leaves a row here, in the
-- transaction that makes it, and a NOTIFY on thingcall_registry: a node
-- re-reads what each row names, in order, after the last row it applied.
CREATE TABLE registry_log (
    seq          BIGSERIAL PRIMARY KEY,
    entity       TEXT NOT NULL,
    key          TEXT NOT NULL,
    product_key  TEXT,
    device_name  TEXT,
    at_ms        BIGINT NOT NULL
);
-- Signature nonces seen by any node, until their timestamp leaves the
-- window: a nonce used on one node is refused on every other.
CREATE TABLE nonces (
    digest      BYTEA PRIMARY KEY,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX nonces_by_expiry ON nonces (expires_ms);
-- The nodes of a cluster and the small number each puts in its message
-- ids (so ids never collide between nodes).
CREATE TABLE nodes (
    node_id  TEXT PRIMARY KEY,
    number   SMALLINT NOT NULL UNIQUE,
    seen_ms  BIGINT NOT NULL
);
