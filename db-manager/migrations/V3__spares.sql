-- Spare databases: made ahead on each server, so that a create renames one instead of waiting
-- for CREATE DATABASE (which copies and fsyncs the template). A row is written before its
-- database, so a spare that a crash left half-made is found and dropped.
CREATE TABLE database_spares (
    server_id  bigint NOT NULL REFERENCES db_servers (id) ON DELETE CASCADE,
    name       text NOT NULL,
    ready      boolean NOT NULL DEFAULT false,
    -- Set when a create takes the spare; the row goes once the spare is renamed.
    claimed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (server_id, name)
);
