-- Notifications: an e-mail's HTML part, kept with its text part (body). It holds the
-- notice's own content only; the page around it (and, for a digest, around several) is
-- added when the e-mail is sent. '' for a webhook call, and for a row written before
-- this column existed: such an e-mail goes out as text alone.
-- Keep this file and ../postgres/00012_notification_html.sql describing the same schema.

-- +goose Up
ALTER TABLE notifications ADD COLUMN body_html TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE notifications DROP COLUMN body_html;
