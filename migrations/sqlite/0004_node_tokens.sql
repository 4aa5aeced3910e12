-- A third role, `node`: data planes subscribe with it. Snapshots carry the
-- private keys of stored certificates, so a viewer token may not subscribe,
-- and a node token may not use the REST API. SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt with its rows.
CREATE TABLE tokens_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'viewer', 'node')),
    hash        TEXT    NOT NULL UNIQUE,       -- sha256 of the token; the token itself is never stored
    created_at  INTEGER NOT NULL
);
INSERT INTO tokens_new (id, name, role, hash, created_at)
    SELECT id, name, role, hash, created_at FROM tokens;
-- Ids keep counting from where they were, deleted ones included.
UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tokens'), 0))
    WHERE name = 'tokens_new';
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
