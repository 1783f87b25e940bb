-- The S3 namespace: buckets (names are global, as in S3) and the keys in them, each naming one
-- chunk-store object.
CREATE TABLE buckets (
    name        text PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    public_read boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX buckets_tenant ON buckets (tenant_id);

CREATE TABLE s3_objects (
    bucket              text NOT NULL REFERENCES buckets (name),
    key                 text COLLATE "C" NOT NULL,
    object_id           bigint NOT NULL UNIQUE REFERENCES objects (id),
    etag                text NOT NULL,
    content_type        text,
    content_disposition text,
    cache_control       text,
    user_metadata       jsonb NOT NULL DEFAULT '{}',
    last_modified       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, key)
);
