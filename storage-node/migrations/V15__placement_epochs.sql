-- A tenant's chunks written before its placement changed may sit in packs of its old domain
-- (shared packs after it became owned, say). Every policy change bumps `placement_epoch`; GC
-- then rewrites the packs holding such chunks into packs of the new domain, and records the
-- epoch it caught up with in `placed_epoch` once no such pack is left.
ALTER TABLE tenants
    ADD COLUMN placement_epoch bigint NOT NULL DEFAULT 0,
    ADD COLUMN placed_epoch    bigint NOT NULL DEFAULT 0;
