-- The chunk store: tenants, storage nodes, pack files, chunks and where they live, objects
-- and their manifests. Chunk locations are keyed by node from the start, so that later a chunk
-- can live on several nodes in several zones.

CREATE TABLE tenants (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    storage_quota_bytes bigint CHECK (storage_quota_bytes >= 0),
    -- Usage counters, kept exact by the transactions that change them.
    object_count        bigint NOT NULL DEFAULT 0,
    logical_bytes       bigint NOT NULL DEFAULT 0,   -- the sum of object sizes
    unique_raw_bytes    bigint NOT NULL DEFAULT 0,   -- the raw size of the distinct chunks
    stored_bytes        bigint NOT NULL DEFAULT 0,   -- those chunks as stored (after compression)
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE storage_nodes (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    zone            text NOT NULL,
    owner_tenant_id bigint REFERENCES tenants (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE packs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id     integer NOT NULL REFERENCES storage_nodes (id),
    -- open: a writer may still append; sealed: immutable, GC may compact it;
    -- retired: its live chunks moved elsewhere, the file is deleted after a grace period.
    state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'sealed', 'retired')),
    size        bigint NOT NULL DEFAULT 0,
    live_bytes  bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
CREATE INDEX packs_node_state ON packs (node_id, state);

CREATE TABLE chunks (
    tenant_id    bigint NOT NULL REFERENCES tenants (id),
    id           bytea NOT NULL CHECK (length(id) = 32),
    raw_len      integer NOT NULL CHECK (raw_len >= 0),
    stored_len   integer NOT NULL CHECK (stored_len >= 0),
    compression  smallint NOT NULL,
    -- How many manifest entries reference the chunk; GC takes it at zero.
    refcount     bigint NOT NULL CHECK (refcount >= 0),
    -- Uploads about to reference the chunk pin it, so GC leaves it alone. Each running upload
    -- counts once; the expiry frees the pins of uploads that died without unpinning.
    pin_count    integer NOT NULL DEFAULT 0 CHECK (pin_count >= 0),
    pinned_until timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX chunks_unreferenced ON chunks (tenant_id) WHERE refcount = 0;

CREATE TABLE chunk_locations (
    tenant_id   bigint NOT NULL,
    chunk_id    bytea NOT NULL,
    node_id     integer NOT NULL REFERENCES storage_nodes (id),
    pack_id     bigint NOT NULL REFERENCES packs (id),
    pack_offset bigint NOT NULL,
    PRIMARY KEY (tenant_id, chunk_id, node_id),
    FOREIGN KEY (tenant_id, chunk_id) REFERENCES chunks (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX chunk_locations_pack ON chunk_locations (pack_id, pack_offset);
CREATE INDEX chunk_locations_node ON chunk_locations (node_id, pack_id, pack_offset);

CREATE TABLE objects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    size        bigint NOT NULL CHECK (size >= 0),
    chunk_count integer NOT NULL,
    md5         bytea,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX objects_tenant ON objects (tenant_id);

-- The manifest: an object's chunks in order. A range read finds its first chunk through the
-- (object_id, logical_offset) key without scanning the manifest.
CREATE TABLE object_chunks (
    object_id      bigint NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    logical_offset bigint NOT NULL,
    tenant_id      bigint NOT NULL,
    chunk_id       bytea NOT NULL,
    PRIMARY KEY (object_id, logical_offset),
    FOREIGN KEY (tenant_id, chunk_id) REFERENCES chunks (tenant_id, id)
);
CREATE INDEX object_chunks_chunk ON object_chunks (tenant_id, chunk_id);
