-- The first schema: AccessKeys, products, model versions, devices,
-- tombstones of deleted device names, and invocation records.
CREATE TABLE access_keys (
    id          TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE products (
    product_key     TEXT PRIMARY KEY,
    product_name    TEXT NOT NULL UNIQUE,
    product_secret  TEXT NOT NULL,
    description     TEXT,
    node_type       INTEGER NOT NULL,
    data_format     INTEGER,
    commodity_code  TEXT,
    auth_type       TEXT NOT NULL,
    protocol_type   TEXT,
    net_type        TEXT,
    category_key    TEXT,
    validate_type   INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    draft_tsl       TEXT NOT NULL
);
CREATE TABLE model_versions (
    product_key  TEXT NOT NULL REFERENCES products(product_key) ON DELETE CASCADE,
    version      TEXT NOT NULL,
    description  TEXT,
    tsl          TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (product_key, version)
);
CREATE TABLE devices (
    iot_id        TEXT PRIMARY KEY,
    product_key   TEXT NOT NULL REFERENCES products(product_key) ON DELETE CASCADE,
    device_name   TEXT NOT NULL,
    device_secret TEXT NOT NULL,
    nickname      TEXT,
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_ms    INTEGER NOT NULL,
    activated_ms  INTEGER,
    online_ms     INTEGER,
    status_ms     INTEGER NOT NULL,
    ip_address    TEXT,
    UNIQUE (product_key, device_name)
);
CREATE TABLE tombstones (
    product_key  TEXT NOT NULL,
    device_name  TEXT NOT NULL,
    deleted_ms   INTEGER NOT NULL,
    PRIMARY KEY (product_key, device_name)
);
CREATE TABLE invocations (
    message_id  TEXT PRIMARY KEY,
    iot_id      TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    name        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    mode        TEXT NOT NULL,
    input       TEXT NOT NULL,
    output      TEXT,
    code        TEXT NOT NULL
);
CREATE INDEX invocations_by_device ON invocations (iot_id, time_ms);
