-- S3 fidelity (issue 14): the headers and checksums an object keeps, and the completions that a
-- retried CompleteMultipartUpload is answered from.

-- Headers stored with an object (and with an upload in progress, for its object), beyond V4's.
-- `expires` is the HTTP date as S3 returns it. The checksum is the one a client sent (or, for a
-- completed upload, the one computed from its parts), base64; a composite one ends in `-N`.
ALTER TABLE s3_objects
    ADD COLUMN content_encoding   text,
    ADD COLUMN content_language   text,
    ADD COLUMN expires            timestamptz,
    ADD COLUMN checksum_algorithm text CHECK (checksum_algorithm IN ('CRC32', 'CRC32C', 'CRC64NVME', 'SHA1', 'SHA256')),
    ADD COLUMN checksum_type      text CHECK (checksum_type IN ('FULL_OBJECT', 'COMPOSITE')),
    ADD COLUMN checksum           text,
    -- A completed upload's parts: [{"number", "size", "checksum"}], in order (GetObjectAttributes).
    ADD COLUMN parts              jsonb;

ALTER TABLE multipart_uploads
    ADD COLUMN content_encoding   text,
    ADD COLUMN content_language   text,
    ADD COLUMN expires            timestamptz,
    ADD COLUMN checksum_algorithm text CHECK (checksum_algorithm IN ('CRC32', 'CRC32C', 'CRC64NVME', 'SHA1', 'SHA256')),
    ADD COLUMN checksum_type      text CHECK (checksum_type IN ('FULL_OBJECT', 'COMPOSITE'));

-- A part's checksum in its upload's algorithm, base64.
ALTER TABLE multipart_parts ADD COLUMN checksum text;

-- Completed uploads, kept for as long as an upload in progress would be (the multipart expiry,
-- counted from the completion): a CompleteMultipartUpload repeated with the same parts (a retry
-- whose first answer was lost) answers 200 with the same ETag, as AWS does.
CREATE TABLE completed_uploads (
    id        text PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    bucket    text NOT NULL,
    key       text COLLATE "C" NOT NULL,
    -- The parts the completion named: [[number, "etag"], ...], in order.
    parts     jsonb NOT NULL,
    etag      text NOT NULL,
    checksum_algorithm text,
    checksum_type      text,
    checksum           text,
    completed timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX completed_uploads_age ON completed_uploads (completed);
