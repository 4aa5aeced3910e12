-- Staged rollouts (docs/rollouts.md); the same tables as
-- migrations/sqlite/0006_rollouts.sql. Every change of a rollout notifies
-- `isame_rollouts`, so that the replicas holding its nodes' streams move
-- them at once.
CREATE TABLE rollout_policies (
    revision    BIGINT  PRIMARY KEY,
    created_at  BIGINT  NOT NULL,
    author      TEXT    NOT NULL,
    policy      TEXT
);

CREATE TABLE rollouts (
    version     BIGINT  PRIMARY KEY REFERENCES config_versions(version),
    base        BIGINT,
    policy      TEXT,
    state       TEXT    NOT NULL,
    revision    BIGINT  NOT NULL,
    progress    TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE rollout_samples (
    rollout     BIGINT  NOT NULL,
    node        TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    version     BIGINT  NOT NULL,
    upstreams   TEXT    NOT NULL
);
CREATE INDEX rollout_samples_by_time ON rollout_samples (rollout, at);

CREATE FUNCTION rollouts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('isame_rollouts', NEW.version::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER rollouts_notify AFTER INSERT OR UPDATE ON rollouts
    FOR EACH ROW EXECUTE FUNCTION rollouts_notify();
