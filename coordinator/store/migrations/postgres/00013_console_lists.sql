-- The console's lists filter the audit log by action and by actor, newest first: without
-- these, a filter on a rare action or actor reads the whole log for one page. Certificates
-- are listed by profile too.
-- Keep this file and ../sqlite/00013_console_lists.sql describing the same schema.

-- +goose Up
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX certificates_profile ON certificates (profile, not_before, serial);

-- +goose Down
DROP INDEX certificates_profile;
DROP INDEX audit_log_actor;
DROP INDEX audit_log_action;
