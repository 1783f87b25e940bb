-- Issue 13, the small-object path.
--
-- Usage as deltas: every commit inserts one row here instead of updating its tenant's row, so
-- that one tenant's commits do not queue on that row (each waiting for the previous one's WAL
-- flush). A tenant's usage is its row's counters plus the sum of its deltas; a background fold
-- moves the deltas into the row, one small transaction per tenant. No foreign key: its check
-- would lock the tenant row on every insert (tenant deletion removes the rows itself).
CREATE TABLE tenant_usage_deltas (
    tenant_id        bigint NOT NULL,
    objects          bigint NOT NULL DEFAULT 0,
    logical_bytes    bigint NOT NULL DEFAULT 0,
    unique_raw_bytes bigint NOT NULL DEFAULT 0,
    stored_bytes     bigint NOT NULL DEFAULT 0
);
CREATE INDEX tenant_usage_deltas_tenant ON tenant_usage_deltas (tenant_id);

-- Small chunks inline: the stored bytes (compressed as `compression` says) of a chunk kept in
-- the catalog instead of a pack. Such a chunk has no chunk_locations row; the catalog's commit
-- is its durability, and the catalog's own replication its copies. EXTERNAL: the bytes are
-- already compressed where that pays, so TOAST must not try again.
ALTER TABLE chunks ADD COLUMN inline_data bytea;
ALTER TABLE chunks ALTER COLUMN inline_data SET STORAGE EXTERNAL;
