-- Canned ACLs (issue 14): who may read a bucket or an object besides its tenant. One column per
-- bucket is the only access state: the management API's public-read switch writes it as
-- 'public-read' or 'private', and PutBucketAcl / x-amz-acl on CreateBucket write the same column.
ALTER TABLE buckets
    ADD COLUMN acl text NOT NULL DEFAULT 'private'
        CHECK (acl IN ('private', 'public-read', 'authenticated-read'));
UPDATE buckets SET acl = 'public-read' WHERE public_read;
ALTER TABLE buckets DROP COLUMN public_read;

-- An object's canned ACL (x-amz-acl on PutObject, CopyObject, CreateMultipartUpload; PutObjectAcl).
-- 'public-read' lets anonymous callers GET and HEAD the object in a private bucket.
ALTER TABLE s3_objects
    ADD COLUMN acl text NOT NULL DEFAULT 'private'
        CHECK (acl IN ('private', 'public-read', 'authenticated-read'));

-- The ACL an upload in progress gives its object at completion.
ALTER TABLE multipart_uploads
    ADD COLUMN acl text NOT NULL DEFAULT 'private'
        CHECK (acl IN ('private', 'public-read', 'authenticated-read'));
