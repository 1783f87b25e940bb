-- Dedicated client databases: the Postgres servers Silo places them on, the databases, what
-- happened to them, and the results of idempotent creates.

CREATE TABLE db_servers (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    -- embedded: the instance under the data directory; registered: given by ops;
    -- dedicated: an instance Silo started for one tenant.
    kind             text NOT NULL CHECK (kind IN ('embedded', 'registered', 'dedicated')),
    -- The admin connection URL (a role with CREATEDB and CREATEROLE), sealed with the server
    -- secret: it holds a password.
    admin_url_sealed bytea NOT NULL,
    -- Where clients connect: host name, IP address or unix socket directory, and port.
    public_host      text NOT NULL,
    public_port      integer NOT NULL,
    zone             text NOT NULL,
    -- NULL: the hosting company's; otherwise only this tenant's databases go here.
    owner_tenant_id  bigint REFERENCES tenants (id),
    -- Dedicated instances: their plan and the node whose data directory holds them.
    plan             text,
    node_name        text,
    capacity_bytes   bigint NOT NULL CHECK (capacity_bytes > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'dedicated') = (plan IS NOT NULL AND node_name IS NOT NULL AND owner_tenant_id IS NOT NULL))
);

CREATE TABLE tenant_databases (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           bigint NOT NULL REFERENCES tenants (id),
    name                text NOT NULL,
    server_id           bigint NOT NULL REFERENCES db_servers (id),
    -- The database's and its owner role's name on the server (unique there).
    pg_name             text NOT NULL,
    plan                text NOT NULL,
    -- The plan's quota, kept here so that placement can sum what a server has promised.
    storage_quota_bytes bigint NOT NULL,
    state               text NOT NULL
        CHECK (state IN ('creating', 'active', 'read_only_over_quota', 'deleting')),
    deletion_protection boolean NOT NULL DEFAULT false,
    -- The latest sample.
    size_bytes          bigint,
    connections         integer,
    sampled_at          timestamptz,
    last_backup_at      timestamptz,
    -- A credential rotation's grace: sessions that started before `terminate_started_before`
    -- are terminated at `terminate_at`.
    terminate_started_before timestamptz,
    terminate_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (server_id, pg_name)
);

CREATE TABLE database_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    database_id bigint NOT NULL REFERENCES tenant_databases (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    event       text NOT NULL,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX database_events_by_database ON database_events (database_id, at);

-- The first response of a create made with an Idempotency-Key, sealed (it holds a password).
CREATE TABLE database_idempotency (
    tenant_id       bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key             text NOT NULL,
    request_digest  bytea NOT NULL,
    response_sealed bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
