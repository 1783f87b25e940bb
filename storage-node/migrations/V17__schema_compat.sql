-- Which releases may still run on this catalog after a newer one migrated it. For each
-- component, the lowest schema version a binary must know to run on the catalog as it is: each
-- release raises it (never lowers it) to what its own migrations need; a migration that only
-- adds what older releases can ignore leaves it, so that a node of the release before can still
-- restart during a rolling upgrade (`storage_node::catalog::apply_migrations`). Releases from
-- before this table refuse any catalog newer than themselves.
CREATE TABLE schema_compat (
    component       text PRIMARY KEY,
    oldest_runnable bigint NOT NULL CHECK (oldest_runnable > 0)
);
