-- What an attempt proved about its token, so that an agent's report can only touch its
-- own job's token: the token the agent reported working on (token_found), whether the
-- attempt really re-initialised it (initialising), and the one result taken for it,
-- with what it said (shown in job show: the help desk sees that the agent stopped).
-- Keep this file and ../postgres/00003_trust.sql describing the same schema.

-- +goose Up
ALTER TABLE job_attempts ADD COLUMN token_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE job_attempts ADD COLUMN reinitialised INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_attempts ADD COLUMN result_message_id TEXT NOT NULL DEFAULT '';
ALTER TABLE job_attempts ADD COLUMN result_summary TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE job_attempts DROP COLUMN result_summary;
ALTER TABLE job_attempts DROP COLUMN result_message_id;
ALTER TABLE job_attempts DROP COLUMN reinitialised;
ALTER TABLE job_attempts DROP COLUMN token_serial;
