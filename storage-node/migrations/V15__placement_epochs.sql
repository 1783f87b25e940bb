-- A tenant's chunks written before its placement changed may sit in packs of its old domain
-- (shared packs after it became owned, say). Every change of its placement bumps
-- `placement_epoch`; GC then rewrites the packs holding such chunks into packs of the new
-- domain, and records the epoch it caught up with in `placed_epoch` once no such pack is left.
ALTER TABLE tenants
    ADD COLUMN placement_epoch bigint NOT NULL DEFAULT 0,
    ADD COLUMN placed_epoch    bigint NOT NULL DEFAULT 0;

-- A trigger, not the application, bumps the epoch: a node of the previous release that changes
-- a policy during a rolling upgrade bumps it too.
CREATE FUNCTION silo_bump_placement_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.placement_epoch := OLD.placement_epoch + 1;
    RETURN NEW;
END
$$;
CREATE TRIGGER tenants_placement_epoch BEFORE UPDATE OF placement, replication_factor, allowed_zones ON tenants
    FOR EACH ROW
    WHEN (OLD.placement IS DISTINCT FROM NEW.placement
          OR OLD.replication_factor IS DISTINCT FROM NEW.replication_factor
          OR OLD.allowed_zones IS DISTINCT FROM NEW.allowed_zones)
    EXECUTE FUNCTION silo_bump_placement_epoch();

-- Releases before this one never moved chunks after a policy change (GC skipped packs whose
-- tenants' placements had come apart): one catch-up for every tenant.
UPDATE tenants SET placement_epoch = 1;
