-- A node answers GET and HEAD from its cache of object lookups only while it holds a lease:
-- it stamps `cache_lease_at` every half second, and writers that replace, delete or change the
-- access of an object ask every node stamped lately to drop it before they acknowledge. A node
-- that does not confirm in time gets its `cache_fence` raised; it empties its cache when its
-- next renewal sees the new fence (`storage_node::read_cache`).
ALTER TABLE storage_nodes
    ADD COLUMN cache_lease_at timestamptz,
    ADD COLUMN cache_fence    bigint NOT NULL DEFAULT 0;
