-- The control plane's store: immutable config versions, the resources of the
-- newest version, API tokens, the node ledger and the audit log.

-- Every change is one row here, never updated or deleted.
CREATE TABLE config_versions (
    version      INTEGER PRIMARY KEY,          -- 1, 2, 3 ... (monotonic)
    created_at   INTEGER NOT NULL,             -- unix milliseconds
    author       TEXT    NOT NULL,             -- token name
    message      TEXT    NOT NULL DEFAULT '',
    hash         TEXT    NOT NULL,             -- sha256 of `config`
    config       TEXT    NOT NULL,             -- the full validated config, JSON
    changes      TEXT    NOT NULL,             -- structured diff against the previous version, JSON
    rollback_of  INTEGER REFERENCES config_versions(version)
);

-- The newest version's resources, written in the same transaction.
CREATE TABLE upstreams (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    algorithm  TEXT    NOT NULL,
    spec       TEXT    NOT NULL                -- the upstream, JSON
);

CREATE TABLE backends (
    upstream   TEXT    NOT NULL REFERENCES upstreams(name) ON DELETE CASCADE,
    url        TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    weight     INTEGER NOT NULL,
    drain      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (upstream, url)
);

CREATE TABLE routes (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    upstream   TEXT    NOT NULL,
    spec       TEXT    NOT NULL                -- the route, JSON
);

-- Global sections (server, health, retry, tls, ...), one row each.
CREATE TABLE settings (
    key        TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL                -- JSON
);

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'viewer')),
    hash        TEXT    NOT NULL UNIQUE,       -- sha256 of the token; the token itself is never stored
    created_at  INTEGER NOT NULL
);

-- Data planes that subscribed, and what each reported.
CREATE TABLE nodes (
    id           TEXT    PRIMARY KEY,
    hostname     TEXT    NOT NULL DEFAULT '',
    labels       TEXT    NOT NULL DEFAULT '{}',  -- JSON object
    build        TEXT    NOT NULL DEFAULT '',
    connected    INTEGER NOT NULL DEFAULT 0,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    version      INTEGER,                        -- newest version ACKed
    last_nack    TEXT,                           -- JSON {version, errors}
    health       TEXT    NOT NULL DEFAULT '[]',  -- JSON: backends as this node sees them
    traffic      TEXT    NOT NULL DEFAULT '{}'   -- JSON: recent counters
);

CREATE TABLE audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,             -- unix milliseconds
    actor        TEXT    NOT NULL,             -- token name
    remote_addr  TEXT    NOT NULL,
    action       TEXT    NOT NULL,             -- e.g. "config.apply", "upstream.update", "version.rollback"
    target       TEXT    NOT NULL DEFAULT '',  -- what was acted on, e.g. an upstream's name
    version      INTEGER,                      -- the version the action created
    message      TEXT    NOT NULL DEFAULT '',
    changes      TEXT    NOT NULL DEFAULT '[]' -- JSON
);
