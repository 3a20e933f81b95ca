-- Signed checkpoints of the audit chain head (audit.Checkpoint), kept so that auditors
-- can list them. They are evidence only where they are also kept outside this database;
-- here they are append-only like the log. Keep this file and
-- ../postgres/00004_audit_checkpoints.sql describing the same schema.

-- +goose Up
CREATE TABLE audit_checkpoints (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    seq       INTEGER NOT NULL CHECK (seq >= 0),
    hash      TEXT NOT NULL,
    at        TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    signature BLOB NOT NULL
);

-- +goose StatementBegin
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER audit_checkpoints_no_delete;
DROP TRIGGER audit_checkpoints_no_update;
DROP TABLE audit_checkpoints;
