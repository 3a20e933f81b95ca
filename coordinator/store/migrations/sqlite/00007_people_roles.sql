-- Custom roles: a named set of permissions beside the built-in roles, optionally limited
-- to one organisation. Users hold them through user_roles like built-in roles, by name;
-- the names cannot be a built-in role's. permissions is a JSON array of permission names.
-- An API token may be the bootstrap administrator's, the only kind allowed to never
-- expire; the token the first start created is marked so.
-- Keep this file and ../postgres/00007_people_roles.sql describing the same schema.

-- +goose Up
CREATE TABLE custom_roles (
    name            TEXT PRIMARY KEY, -- lower case, as jobs.ValidCustomRoleName wants
    description     TEXT NOT NULL DEFAULT '',
    organisation_id TEXT REFERENCES organisations (id),
    permissions     TEXT NOT NULL DEFAULT '[]',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

ALTER TABLE api_tokens ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0;
UPDATE api_tokens SET bootstrap = 1
WHERE name = 'bootstrap' AND expires_at IS NULL
  AND user_id IN (SELECT id FROM users WHERE username_key = 'admin');

-- +goose Down
ALTER TABLE api_tokens DROP COLUMN bootstrap;
DROP TABLE custom_roles;
