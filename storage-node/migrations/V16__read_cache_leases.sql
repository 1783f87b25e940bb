-- A node answers GET and HEAD from its cache of object lookups only while it holds a lease:
-- it stamps `cache_lease_at` every half second, and writers that replace, delete or change the
-- access of objects ask every node stamped lately to drop them before they acknowledge. A node
-- that does not confirm in time gets its `cache_fence` raised; its next renewal sees the new
-- fence, empties its cache and clears its stamp (`storage_node::read_cache`).
-- `invalidates_reads` is set by the registration of nodes of this release on: while a live node
-- of an older one (whose writes invalidate nothing) shares the catalog, no node takes a lease.
ALTER TABLE storage_nodes
    ADD COLUMN cache_lease_at    timestamptz,
    ADD COLUMN cache_fence       bigint  NOT NULL DEFAULT 0,
    ADD COLUMN invalidates_reads boolean NOT NULL DEFAULT false;
