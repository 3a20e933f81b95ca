-- Signing in to the web console: passwords, lockout, sessions and OpenID Connect
-- identities.
-- users.password_hash is a self-describing argon2id hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash);
-- NULL: the user has no password and cannot sign in with one. failed_sign_ins counts wrong
-- passwords since the last success or lock; lockouts counts the locks since the last
-- success, which doubles each lock's length; locked_until is when the current lock ends.
-- A session is one signed-in browser: only the SHA-256 of its secret is kept (the secret
-- lives in the browser's cookie). It ends at ended_at, or when idle past idle_expires_at
-- or past expires_at, whichever comes first; last_seen_at and idle_expires_at are written
-- at most once a minute.
-- An OIDC identity links an identity provider's (issuer, subject) to a user, recorded at
-- the first sign-in; later sign-ins find the user by the link alone.
-- Keep this file and ../sqlite/00011_console.sql describing the same schema.

-- +goose Up
ALTER TABLE users ADD COLUMN password_hash text;
ALTER TABLE users ADD COLUMN password_set_at timestamptz;
ALTER TABLE users ADD COLUMN failed_sign_ins integer NOT NULL DEFAULT 0 CHECK (failed_sign_ins >= 0);
ALTER TABLE users ADD COLUMN lockouts integer NOT NULL DEFAULT 0 CHECK (lockouts >= 0);
ALTER TABLE users ADD COLUMN locked_until timestamptz;

CREATE TABLE sessions (
    id              text PRIMARY KEY,      -- public identifier, for logs and the audit log
    secret_hash     text NOT NULL UNIQUE,  -- hex SHA-256 of the secret; the secret itself is never stored
    user_id         text NOT NULL REFERENCES users (id),
    method          text NOT NULL CHECK (method IN ('password', 'oidc')),
    csrf            text NOT NULL,
    source          text NOT NULL DEFAULT '', -- where the browser signed in from
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    idle_expires_at timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    end_reason      text NOT NULL DEFAULT ''
);
-- A user's open sessions: what a password change or a disabled user ends.
CREATE INDEX sessions_user ON sessions (user_id, created_at) WHERE ended_at IS NULL;
-- Purging old sessions.
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE oidc_identities (
    issuer       text NOT NULL,
    subject      text NOT NULL,
    user_id      text NOT NULL REFERENCES users (id),
    email        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX oidc_identities_user ON oidc_identities (user_id);

-- +goose Down
DROP TABLE oidc_identities;
DROP TABLE sessions;
ALTER TABLE users DROP COLUMN locked_until;
ALTER TABLE users DROP COLUMN lockouts;
ALTER TABLE users DROP COLUMN failed_sign_ins;
ALTER TABLE users DROP COLUMN password_set_at;
ALTER TABLE users DROP COLUMN password_hash;
