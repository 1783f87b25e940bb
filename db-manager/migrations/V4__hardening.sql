-- An in-place restore is recorded before it drops anything, so a crash half-way is rolled back
-- to its safety backup at the next start (or reported as restore_failed when that fails too).
ALTER TABLE tenant_databases DROP CONSTRAINT tenant_databases_state_check;
ALTER TABLE tenant_databases ADD CONSTRAINT tenant_databases_state_check
    CHECK (state IN ('creating', 'active', 'read_only_over_quota', 'deleting', 'restoring', 'restore_failed'));
ALTER TABLE tenant_databases ADD COLUMN restore_safety_backup bigint;
-- The SECURITY DEFINER routines whose EXECUTE was taken from PUBLIC while over quota.
ALTER TABLE tenant_databases ADD COLUMN read_only_revoked text[] NOT NULL DEFAULT '{}';
