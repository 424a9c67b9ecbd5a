-- Custom modules (function blocks): their drafts, and their text in each
-- published version.
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
