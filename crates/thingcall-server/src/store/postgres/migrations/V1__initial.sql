-- The whole schema, as the SQLite store has it after its fourth migration:
-- AccessKeys, products, model versions and custom modules, devices,
-- tombstones of deleted device names, and invocation records keyed by
-- their integer message id.
CREATE TABLE access_keys (
    id          TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE products (
    product_key     TEXT PRIMARY KEY,
    product_name    TEXT NOT NULL UNIQUE,
    product_secret  TEXT NOT NULL,
    description     TEXT,
    node_type       BIGINT NOT NULL,
    data_format     BIGINT,
    commodity_code  TEXT,
    auth_type       TEXT NOT NULL,
    protocol_type   TEXT,
    net_type        TEXT,
    category_key    TEXT,
    validate_type   BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    draft_tsl       TEXT NOT NULL
);
CREATE TABLE model_versions (
    product_key  TEXT NOT NULL REFERENCES products(product_key) ON DELETE CASCADE,
    version      TEXT NOT NULL,
    description  TEXT,
    tsl          TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    PRIMARY KEY (product_key, version)
);
CREATE TABLE modules (
    product_key  TEXT NOT NULL REFERENCES products(product_key) ON DELETE CASCADE,
    block_id     TEXT NOT NULL,
    block_name   TEXT NOT NULL,
    draft_tsl    TEXT NOT NULL,
    PRIMARY KEY (product_key, block_id)
);
CREATE TABLE module_versions (
    product_key  TEXT NOT NULL,
    version      TEXT NOT NULL,
    block_id     TEXT NOT NULL,
    tsl          TEXT NOT NULL,
    PRIMARY KEY (product_key, version, block_id),
    FOREIGN KEY (product_key, version) REFERENCES model_versions(product_key, version) ON DELETE CASCADE
);
CREATE TABLE devices (
    iot_id        TEXT PRIMARY KEY,
    product_key   TEXT NOT NULL REFERENCES products(product_key) ON DELETE CASCADE,
    device_name   TEXT NOT NULL,
    device_secret TEXT NOT NULL,
    nickname      TEXT,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    created_ms    BIGINT NOT NULL,
    activated_ms  BIGINT,
    online_ms     BIGINT,
    status_ms     BIGINT NOT NULL,
    ip_address    TEXT,
    UNIQUE (product_key, device_name)
);
CREATE TABLE tombstones (
    product_key  TEXT NOT NULL,
    device_name  TEXT NOT NULL,
    deleted_ms   BIGINT NOT NULL,
    PRIMARY KEY (product_key, device_name)
);
CREATE TABLE invocations (
    message_id  BIGINT PRIMARY KEY,
    iot_id      TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    name        TEXT NOT NULL,
    time_ms     BIGINT NOT NULL,
    mode        TEXT NOT NULL,
    input       TEXT NOT NULL,
    output      TEXT,
    code        TEXT NOT NULL
);
CREATE INDEX invocations_by_device ON invocations (iot_id, time_ms);
