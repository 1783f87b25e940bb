-- Multipart uploads: each part is a chunk-store object of its own until the upload completes
-- (the parts' manifests are then concatenated into the object) or is aborted or expires.
CREATE TABLE multipart_uploads (
    id                  text PRIMARY KEY,
    bucket              text NOT NULL REFERENCES buckets (name),
    key                 text COLLATE "C" NOT NULL,
    tenant_id           bigint NOT NULL REFERENCES tenants (id),
    content_type        text,
    content_disposition text,
    cache_control       text,
    user_metadata       jsonb NOT NULL DEFAULT '{}',
    initiated           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX multipart_uploads_bucket ON multipart_uploads (bucket, key);

CREATE TABLE multipart_parts (
    upload_id     text NOT NULL REFERENCES multipart_uploads (id) ON DELETE CASCADE,
    part_number   integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    object_id     bigint NOT NULL UNIQUE REFERENCES objects (id),
    etag          text NOT NULL,
    size          bigint NOT NULL,
    last_modified timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, part_number)
);
