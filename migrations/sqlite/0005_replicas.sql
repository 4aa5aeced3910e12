-- Several control-plane processes on one database: each node's row names
-- the replica holding its stream (so that only that replica marks it
-- disconnected, and a node that moved stays connected), replicas are heard
-- from every few seconds, and jobs that must run once hold a lease.
ALTER TABLE nodes ADD COLUMN replica TEXT;
-- No stream outlives the process that held it; rows from before this
-- migration name no replica.
UPDATE nodes SET connected = 0;

CREATE TABLE replicas (
    id          TEXT    PRIMARY KEY,
    started_at  INTEGER NOT NULL,              -- unix milliseconds
    last_seen   INTEGER NOT NULL
);

CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,              -- replica id
    expires_at  INTEGER NOT NULL               -- unix milliseconds
);
