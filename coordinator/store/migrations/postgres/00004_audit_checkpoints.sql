-- Signed checkpoints of the audit chain head (audit.Checkpoint), kept so that auditors
-- can list them. They are evidence only where they are also kept outside this database;
-- here they are append-only like the log. Keep this file and
-- ../sqlite/00004_audit_checkpoints.sql describing the same schema.

-- +goose Up
CREATE TABLE audit_checkpoints (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq       bigint NOT NULL CHECK (seq >= 0),
    hash      text NOT NULL,
    at        timestamptz NOT NULL,
    key_id    text NOT NULL,
    signature bytea NOT NULL
);

-- +goose StatementBegin
CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only' USING ERRCODE = 'restrict_violation';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_checkpoints_no_change BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_append_only();

-- +goose Down
DROP TABLE audit_checkpoints;
DROP FUNCTION audit_checkpoints_append_only();
