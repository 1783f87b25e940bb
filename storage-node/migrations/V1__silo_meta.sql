-- One row that names this catalog. Its id survives restarts and tells operators (and tests)
-- which catalog a Silo process is attached to.
CREATE TABLE silo_meta (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    catalog_id uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO silo_meta DEFAULT VALUES;
