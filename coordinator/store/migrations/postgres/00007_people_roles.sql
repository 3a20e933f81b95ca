-- Custom roles: a named set of permissions beside the built-in roles, optionally limited
-- to one organisation. Users hold them through user_roles like built-in roles, by name;
-- the names cannot be a built-in role's. permissions is a JSON array of permission names.
-- An API token may be the bootstrap administrator's, the only kind allowed to never
-- expire; the token the first start created is marked so.
-- Keep this file and ../sqlite/00007_people_roles.sql describing the same schema.

-- +goose Up
CREATE TABLE custom_roles (
    name            text PRIMARY KEY, -- lower case, as jobs.ValidCustomRoleName wants
    description     text NOT NULL DEFAULT '',
    organisation_id text REFERENCES organisations (id),
    permissions     jsonb NOT NULL DEFAULT '[]',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

ALTER TABLE api_tokens ADD COLUMN bootstrap boolean NOT NULL DEFAULT false;
UPDATE api_tokens SET bootstrap = true
WHERE name = 'bootstrap' AND expires_at IS NULL
  AND user_id IN (SELECT id FROM users WHERE username_key = 'admin');

-- +goose Down
ALTER TABLE api_tokens DROP COLUMN bootstrap;
DROP TABLE custom_roles;
