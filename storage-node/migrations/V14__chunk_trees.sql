-- The chaining values of an uncompressed chunk's 64 KiB blocks (storage_node::chunk_tree), 32
-- bytes a block, so that a range read verifies only the blocks it covers. NULL for a chunk of
-- one block or less, a compressed one, or one stored before this column.
ALTER TABLE chunks ADD COLUMN tree bytea;
ALTER TABLE chunks ALTER COLUMN tree SET STORAGE EXTERNAL;
