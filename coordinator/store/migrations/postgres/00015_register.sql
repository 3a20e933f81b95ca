-- The crypto-device register: the document (number and calendar date, YYYY-MM-DD, no time
-- zone) a job request cites, kept with the job; '' for none. Tokens are listed by serial to
-- find when an issued device came back (a later issue or wipe of the same token).
-- Keep this file and ../sqlite/00015_register.sql describing the same schema.

-- +goose Up
ALTER TABLE jobs ADD COLUMN document_number text NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN document_date text NOT NULL DEFAULT '';
CREATE INDEX jobs_token ON jobs (token_serial, kind, state) WHERE token_serial IS NOT NULL;

-- +goose Down
DROP INDEX jobs_token;
ALTER TABLE jobs DROP COLUMN document_date;
ALTER TABLE jobs DROP COLUMN document_number;
