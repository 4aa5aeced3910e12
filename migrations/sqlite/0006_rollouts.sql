-- Staged rollouts (docs/rollouts.md). The policy is versioned like the
-- config: each change is a new revision, a removal one whose policy is
-- NULL. Each committed version gets one rollout row, which says which
-- nodes serve it and which keep its base; `revision` orders the writers of
-- a row (a change names the revision it read). Samples are the traffic
-- reports gates judge, kept only while a rollout runs.
CREATE TABLE rollout_policies (
    revision    INTEGER PRIMARY KEY,
    created_at  INTEGER NOT NULL,              -- unix milliseconds
    author      TEXT    NOT NULL,              -- token name
    policy      TEXT                           -- canonical JSON; NULL: none
);

CREATE TABLE rollouts (
    version     INTEGER PRIMARY KEY REFERENCES config_versions(version),
    base        INTEGER,                       -- the version others keep serving
    policy      TEXT,                          -- JSON copy; NULL: everywhere at once
    state       TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    progress    TEXT    NOT NULL,              -- stages, timeline, failure (JSON)
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE rollout_samples (
    rollout     INTEGER NOT NULL,
    node        TEXT    NOT NULL,
    at          INTEGER NOT NULL,              -- unix milliseconds, as received
    version     INTEGER NOT NULL,              -- served over the period
    upstreams   TEXT    NOT NULL               -- JSON
);
CREATE INDEX rollout_samples_by_time ON rollout_samples (rollout, at);
