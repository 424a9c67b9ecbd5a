-- A node reads, for each logged entity, its newest entry (to tell a stale
-- re-read from a current one): one index lookup instead of a scan.
CREATE INDEX registry_log_by_entity ON registry_log (entity, key, seq);
