-- Access-key cache invalidation (issue 13): every node caches the keys it has checked, and
-- listens on the channel 'silo_access' (storage_node::catalog::key_cache). A trigger, not the
-- code that changes a row, sends the notice, so that every path (the management API, a tenant's
-- deletion, an operator's SQL) is covered. pg_notify is transactional: the notice goes out when
-- the change commits, and not at all when it rolls back.
--
-- The notices: 'key:<id>' for a key revoked, changed or deleted; 'tenant:<id>' for a tenant whose
-- deletion starts (its keys stop working) or that is deleted; 'all' for a truncation.
CREATE FUNCTION silo_notify_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('silo_access', 'all');
    ELSIF TG_TABLE_NAME = 'access_keys' THEN
        PERFORM pg_notify('silo_access', 'key:' || OLD.id);
    ELSE
        PERFORM pg_notify('silo_access', 'tenant:' || OLD.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER access_keys_notify AFTER UPDATE OR DELETE ON access_keys
    FOR EACH ROW EXECUTE FUNCTION silo_notify_access();
CREATE TRIGGER tenants_notify_deleting AFTER UPDATE OF deleting_at ON tenants
    FOR EACH ROW WHEN (OLD.deleting_at IS DISTINCT FROM NEW.deleting_at)
    EXECUTE FUNCTION silo_notify_access();
CREATE TRIGGER tenants_notify_deleted AFTER DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION silo_notify_access();
CREATE TRIGGER access_keys_notify_truncate AFTER TRUNCATE ON access_keys
    FOR EACH STATEMENT EXECUTE FUNCTION silo_notify_access();
CREATE TRIGGER tenants_notify_truncate AFTER TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION silo_notify_access();
