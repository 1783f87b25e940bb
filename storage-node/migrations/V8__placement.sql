-- Placement (issue 12): how many copies of a tenant's packs, in which zones, on whose nodes;
-- and which nodes hold a copy of each pack. Additive: the chunk store moves onto these rows in
-- the next migration.

ALTER TABLE tenants
    -- shared: the shared nodes (those with no owner); owned: only the tenant's own nodes.
    ADD COLUMN placement           text NOT NULL DEFAULT 'shared'
                                   CHECK (placement IN ('shared', 'owned')),
    -- Copies of every pack, each in a distinct zone. NULL: the deployment's default, 2 where
    -- the tenant's nodes span two or more zones, else 1.
    ADD COLUMN replication_factor  smallint CHECK (replication_factor BETWEEN 1 AND 8),
    -- The zones its packs may live in. NULL: every zone.
    ADD COLUMN allowed_zones       text[] CHECK (cardinality(allowed_zones) > 0),
    -- When fewer zones than the replication factor are reachable: refuse the write (503 with
    -- Retry-After), or accept it with fewer copies and repair it first.
    ADD COLUMN on_shortage         text NOT NULL DEFAULT 'refuse'
                                   CHECK (on_shortage IN ('refuse', 'degraded'));

-- The placement domain of a pack: the shared nodes (NULL) or one tenant's own nodes. A pack
-- holds chunks of its domain only, so an owned tenant's bytes never share a pack (or a disk)
-- with anyone else's. `packs.node_id` stays the node that writes (or wrote) the pack.
ALTER TABLE packs
    ADD COLUMN owner_tenant_id bigint REFERENCES tenants (id),
    -- The copies the pack was written for (the policy then); repair compares with the policy now.
    ADD COLUMN replicas_wanted smallint NOT NULL DEFAULT 1 CHECK (replicas_wanted >= 1);

-- The copies of each pack. writing: the pack is open and this copy holds every byte up to the
-- last commit; ok: a whole copy; damaged: a read or scrub found bad bytes in it, repair replaces it.
CREATE TABLE pack_replicas (
    pack_id    bigint NOT NULL REFERENCES packs (id) ON DELETE CASCADE,
    node_id    integer NOT NULL REFERENCES storage_nodes (id),
    state      text NOT NULL DEFAULT 'writing' CHECK (state IN ('writing', 'ok', 'damaged')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pack_id, node_id)
);
CREATE INDEX pack_replicas_node ON pack_replicas (node_id, pack_id);

INSERT INTO pack_replicas (pack_id, node_id, state)
SELECT id, node_id, CASE WHEN state = 'open' THEN 'writing' ELSE 'ok' END FROM packs;
