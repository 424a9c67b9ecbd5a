-- The ids of the keys that seal the secret columns (access_keys.secret,
-- products.product_secret, devices.device_secret): an HMAC under each key,
-- never a key. Filled by the server right after the migrations, in the
-- transaction that seals the rows an earlier release kept in plaintext.
CREATE TABLE secret_keys (
    key_id  TEXT PRIMARY KEY
);
