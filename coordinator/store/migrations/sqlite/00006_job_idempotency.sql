-- A job creation request may carry an Idempotency-Key: the requester's name for that one
-- request, so that sending it again (after a lost response) returns the job it created
-- instead of creating another. The key is unique per requester; the request hash says
-- which request it named, so the same key with another request is refused. Keys live as
-- long as their job: nothing expires them.
-- Keep this file and ../postgres/00006_job_idempotency.sql describing the same schema.

-- +goose Up
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE jobs ADD COLUMN request_hash TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX jobs_idempotency ON jobs (requester_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- +goose Down
DROP INDEX jobs_idempotency;
ALTER TABLE jobs DROP COLUMN request_hash;
ALTER TABLE jobs DROP COLUMN idempotency_key;
