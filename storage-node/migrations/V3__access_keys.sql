-- S3 access keys. The secret is needed in clear to check SigV4 signatures, so it is kept
-- sealed (XChaCha20-Poly1305 under a key derived from the server secret), never in clear.
CREATE TABLE access_keys (
    id             text PRIMARY KEY,
    tenant_id      bigint NOT NULL REFERENCES tenants (id),
    sealed_secret  bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);
CREATE INDEX access_keys_tenant ON access_keys (tenant_id);
