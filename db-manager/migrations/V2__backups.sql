-- Backups of client databases: pg_dump archives stored as objects of the tenant in the chunk
-- store, outside every bucket, so S3 keys can neither see nor change them.

CREATE TABLE database_backups (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- NULL once the database is deleted: its backups stay restorable.
    database_id      bigint REFERENCES tenant_databases (id) ON DELETE SET NULL,
    database_name    text NOT NULL,
    plan             text NOT NULL,
    server_name      text NOT NULL,
    server_version   text,
    -- scheduled: by `backup run`; manual: asked for one database; final: before a delete;
    -- safety: before an in-place restore.
    kind             text NOT NULL CHECK (kind IN ('scheduled', 'manual', 'final', 'safety')),
    status           text NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    logical_bytes    bigint,
    new_stored_bytes bigint,
    -- Deleting the object (pruning, or purging the tenant) deletes the backup with it.
    object_id        bigint REFERENCES objects (id) ON DELETE CASCADE,
    -- The row count of every table, counted in the dump's own snapshot, for verification.
    table_counts     jsonb,
    -- Final and safety backups are kept until then, outside the plan's retention.
    expires_at       timestamptz,
    error            text,
    CHECK (status <> 'complete' OR (object_id IS NOT NULL AND finished_at IS NOT NULL))
);
CREATE INDEX database_backups_by_database ON database_backups (tenant_id, database_name, started_at DESC);

-- Backups of Silo's own catalog: dumps stored as objects of the system tenant, each with an
-- offline manifest file beside the packs, so a lost catalog can be rebuilt without itself.
CREATE TABLE catalog_backups (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status           text NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    logical_bytes    bigint,
    new_stored_bytes bigint,
    object_id        bigint REFERENCES objects (id) ON DELETE CASCADE,
    manifest_path    text,
    error            text
);
