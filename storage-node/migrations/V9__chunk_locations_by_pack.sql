-- A chunk has one location, a pack and an offset; its copies are that pack's replicas
-- (`pack_replicas`), not rows of its own per node. The node column goes: rows were keyed by it
-- so that a chunk could live on several nodes, and a replicated pack now says that for all of its
-- chunks at once.

-- Before V8 each catalog had one node; should an old catalog hold a chunk at two nodes, the
-- lowest node's row stays.
DELETE FROM chunk_locations a USING chunk_locations b
 WHERE a.tenant_id = b.tenant_id AND a.chunk_id = b.chunk_id AND a.node_id > b.node_id;

ALTER TABLE chunk_locations DROP CONSTRAINT chunk_locations_pkey;
ALTER TABLE chunk_locations DROP COLUMN node_id;
ALTER TABLE chunk_locations ADD PRIMARY KEY (tenant_id, chunk_id);

-- A deleted tenant's packs hold only its dead chunks, which GC clears; they must not keep the
-- tenant's row alive.
ALTER TABLE packs DROP CONSTRAINT packs_owner_tenant_id_fkey,
    ADD CONSTRAINT packs_owner_tenant_id_fkey FOREIGN KEY (owner_tenant_id)
        REFERENCES tenants (id) ON DELETE SET NULL;
