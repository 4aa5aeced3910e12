-- Versions are history: once written, a row of config_versions never
-- changes and is never removed, whoever holds a connection.
CREATE TRIGGER config_versions_no_update
BEFORE UPDATE ON config_versions
BEGIN
    SELECT RAISE(ABORT, 'config versions are immutable');
END;

CREATE TRIGGER config_versions_no_delete
BEFORE DELETE ON config_versions
BEGIN
    SELECT RAISE(ABORT, 'config versions are immutable');
END;
