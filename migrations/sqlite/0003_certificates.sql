-- The certificate store. A certificate is uploaded once under a name and
-- referenced from the config by that name (`tls.certificate`).

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
    not_before   INTEGER NOT NULL,             -- unix seconds
    not_after    INTEGER NOT NULL,             -- unix seconds
    created_at   INTEGER NOT NULL,             -- unix milliseconds
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT    NOT NULL              -- token name
);

-- The material each name resolved to when a version was committed, JSON
-- {"name": "material id"}: a replaced certificate is a new version.
ALTER TABLE config_versions ADD COLUMN certificates TEXT NOT NULL DEFAULT '{}';
