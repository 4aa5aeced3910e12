-- The control plane's store on PostgreSQL: the same tables as on SQLite
-- (migrations/sqlite/, folded into one step), with the same immutability of
-- versions, and a notification of every committed version so that every
-- replica hears of it. JSON is kept as text, byte for byte as written.

-- Every change is one row here, never updated or deleted.
CREATE TABLE config_versions (
    version      BIGINT  PRIMARY KEY,          -- 1, 2, 3 ... (monotonic)
    created_at   BIGINT  NOT NULL,             -- unix milliseconds
    author       TEXT    NOT NULL,             -- token name
    message      TEXT    NOT NULL DEFAULT '',
    hash         TEXT    NOT NULL,             -- sha256 of `config` and the certificates it names
    config       TEXT    NOT NULL,             -- the full validated config, JSON
    changes      TEXT    NOT NULL,             -- structured diff against the previous version, JSON
    rollback_of  BIGINT  REFERENCES config_versions(version),
    certificates TEXT    NOT NULL DEFAULT '{}' -- JSON {"name": "material id"}
);

CREATE FUNCTION config_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'config versions are immutable';
END
$$;

CREATE TRIGGER config_versions_no_update BEFORE UPDATE OR DELETE ON config_versions
    FOR EACH ROW EXECUTE FUNCTION config_versions_immutable();
CREATE TRIGGER config_versions_no_truncate BEFORE TRUNCATE ON config_versions
    FOR EACH STATEMENT EXECUTE FUNCTION config_versions_immutable();

-- Sent when the inserting transaction commits, to every replica listening.
CREATE FUNCTION config_versions_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('isame_versions', NEW.version::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER config_versions_notify AFTER INSERT ON config_versions
    FOR EACH ROW EXECUTE FUNCTION config_versions_notify();

-- The newest version's resources, written in the same transaction.
CREATE TABLE upstreams (
    name       TEXT    PRIMARY KEY,
    position   BIGINT  NOT NULL,
    algorithm  TEXT    NOT NULL,
    spec       TEXT    NOT NULL                -- the upstream, JSON
);

CREATE TABLE backends (
    upstream   TEXT    NOT NULL REFERENCES upstreams(name) ON DELETE CASCADE,
    url        TEXT    NOT NULL,
    position   BIGINT  NOT NULL,
    weight     BIGINT  NOT NULL,
    drain      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (upstream, url)
);

CREATE TABLE routes (
    name       TEXT    PRIMARY KEY,
    position   BIGINT  NOT NULL,
    upstream   TEXT    NOT NULL,
    spec       TEXT    NOT NULL                -- the route, JSON
);

-- Global sections (server, health, retry, tls, ...), one row each.
CREATE TABLE settings (
    key        TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL                -- JSON
);

CREATE TABLE tokens (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'viewer', 'node')),
    hash        TEXT    NOT NULL UNIQUE,       -- sha256 of the token; the token itself is never stored
    created_at  BIGINT  NOT NULL
);

-- Control-plane processes on this database, each heard from every few
-- seconds; the nodes of one that went silent are no longer connected.
CREATE TABLE replicas (
    id          TEXT    PRIMARY KEY,
    started_at  BIGINT  NOT NULL,              -- unix milliseconds
    last_seen   BIGINT  NOT NULL
);

-- Data planes that subscribed, and what each reported.
CREATE TABLE nodes (
    id           TEXT    PRIMARY KEY,
    hostname     TEXT    NOT NULL DEFAULT '',
    labels       TEXT    NOT NULL DEFAULT '{}',  -- JSON object
    build        TEXT    NOT NULL DEFAULT '',
    connected    BOOLEAN NOT NULL DEFAULT FALSE,
    replica      TEXT,                           -- the replica holding its stream
    first_seen   BIGINT  NOT NULL,
    last_seen    BIGINT  NOT NULL,
    version      BIGINT,                         -- newest version ACKed
    last_nack    TEXT,                           -- JSON {version, errors}
    health       TEXT    NOT NULL DEFAULT '[]',  -- JSON: backends as this node sees them
    traffic      TEXT    NOT NULL DEFAULT '{}'   -- JSON: recent counters
);

CREATE TABLE audit (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT  NOT NULL,             -- unix milliseconds
    actor        TEXT    NOT NULL,             -- token name
    remote_addr  TEXT    NOT NULL,
    action       TEXT    NOT NULL,             -- e.g. "config.apply", "upstream.update", "version.rollback"
    target       TEXT    NOT NULL DEFAULT '',  -- what was acted on, e.g. an upstream's name
    version      BIGINT,                       -- the version the action created
    message      TEXT    NOT NULL DEFAULT '',
    changes      TEXT    NOT NULL DEFAULT '[]' -- JSON
);

-- Jobs that must run on one replica at a time hold a lease, renewed while
-- the holder lives and taken over once it has expired.
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,              -- replica id
    expires_at  BIGINT  NOT NULL               -- unix milliseconds
);

-- Certificate chains with their private keys, by content (sha256 of both):
-- never changed, so every version can be sent again exactly as committed.
CREATE TABLE certificate_material (
    id          TEXT    PRIMARY KEY,
    cert_pem    TEXT    NOT NULL,
    key_pem     TEXT    NOT NULL
);

-- The names, each pointing at its current material, with what the
-- certificate says about itself (what GET shows; never the key).
CREATE TABLE certificates (
    name         TEXT    PRIMARY KEY,
    material_id  TEXT    NOT NULL REFERENCES certificate_material(id),
    fingerprint  TEXT    NOT NULL,             -- sha256 of the leaf certificate (DER)
    subject      TEXT    NOT NULL,
    issuer       TEXT    NOT NULL,
    names        TEXT    NOT NULL,             -- JSON list of DNS names / IPs covered
    not_before   BIGINT  NOT NULL,             -- unix seconds
    not_after    BIGINT  NOT NULL,             -- unix seconds
    created_at   BIGINT  NOT NULL,             -- unix milliseconds
    updated_at   BIGINT  NOT NULL,
    updated_by   TEXT    NOT NULL              -- token name
);
