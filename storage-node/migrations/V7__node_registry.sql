-- The node registry: what each storage node says about itself when it starts, and its
-- heartbeat. Silo is still one node per catalog until pack replicas and replicated writes land
-- (issue 12); `silo serve` refuses to start beside another node that is not removed.

ALTER TABLE storage_nodes
    -- Where its peers reach its internal node API (none until it serves one).
    ADD COLUMN internal_url   text,
    -- How many bytes it may hold: by default the size of its data directory's filesystem.
    ADD COLUMN capacity_bytes bigint CHECK (capacity_bytes >= 0),
    -- active: takes new packs; draining: its packs move elsewhere; removed: holds nothing and
    -- is kept only as a name that old rows point at.
    ADD COLUMN state          text NOT NULL DEFAULT 'active'
                              CHECK (state IN ('active', 'draining', 'removed')),
    ADD COLUMN started_at     timestamptz,
    ADD COLUMN heartbeat_at   timestamptz,
    -- Set by a clean shutdown, cleared by the next start.
    ADD COLUMN stopped_at     timestamptz,
    -- The Silo version it last started with.
    ADD COLUMN version        text,
    -- The identity of the data directory it runs on (`DataDir::identity`): another directory
    -- started under this name does not hold this node's packs, so it is refused.
    ADD COLUMN data_dir_id    text;

-- Rows of nodes that never held a pack (a renamed node, an experiment) would otherwise count as
-- other nodes and refuse every start; they are kept as removed names. A removed node that
-- starts again becomes active.
UPDATE storage_nodes n SET state = 'removed'
 WHERE NOT EXISTS (SELECT 1 FROM packs p WHERE p.node_id = n.id AND p.state <> 'retired');

-- A key derived from the server secret the catalog was first used with (never the secret):
-- a node with another secret would seal and name things that this catalog's other rows
-- cannot be read with, so it is refused.
ALTER TABLE silo_meta ADD COLUMN server_secret_fingerprint text;
