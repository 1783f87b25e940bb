-- A bucket's identity, which its name does not carry: a name deleted and created again (by
-- another tenant, say) is another bucket. Writes check the identity they authorized against,
-- inside the transaction that binds the key, so they can never land in the new bucket.
ALTER TABLE buckets ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;

-- Set when a tenant's deletion starts: its keys stop working and nothing new is stored for it.
-- The deletion (db-manager's tenant_deletion) resumes from wherever a crash stopped it. A
-- tenant whose final database backups are kept stays, with only those, until they expire.
-- How that deletion was asked to run, so that a resumed one does the same: whether the tenant's
-- databases get final backups (kept, with the tenant row, until they expire).
ALTER TABLE tenants ADD COLUMN deleting_at timestamptz,
                    ADD COLUMN deletion_keeps_final_backups boolean;

