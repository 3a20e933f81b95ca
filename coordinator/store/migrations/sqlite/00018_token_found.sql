-- The found state of the token life cycle (package tokenlife): a lost or stolen token back
-- in the organisation's hands, to be wiped or retired. SQLite cannot change a CHECK
-- constraint: the table is rebuilt with the same columns and index.
-- Keep this file and ../postgres/00018_token_found.sql describing the same schema.

-- +goose Up
-- A rebuild succeeds however often it runs; two processes migrating a new file at once
-- must not both apply it (see Migrate). The guard fails when the table already takes
-- found, so the later one rolls back and finds the work done.
CREATE TEMP TABLE token_found_guard (applied INTEGER CHECK (applied = 0));
INSERT INTO token_found_guard SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'token_life' AND sql LIKE '%''found''%';
DROP TABLE token_found_guard;
CREATE TABLE token_life_new (
    serial        TEXT PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'lost', 'stolen', 'damaged', 'retired', 'replaced', 'found')),
    holder_id     TEXT REFERENCES users (id),
    reason        TEXT NOT NULL DEFAULT '',
    changed_by    TEXT NOT NULL,
    changed_at    TEXT NOT NULL,
    temporary_for TEXT NOT NULL DEFAULT '', -- the suspended token this one stands in for
    replaced_by   TEXT NOT NULL DEFAULT '', -- the token that replaced this one
    version       INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)
);
INSERT INTO token_life_new SELECT serial, state, holder_id, reason, changed_by, changed_at, temporary_for, replaced_by, version FROM token_life;
DROP TABLE token_life;
ALTER TABLE token_life_new RENAME TO token_life;
CREATE INDEX token_life_temporary ON token_life (temporary_for, serial) WHERE temporary_for <> '';

-- +goose Down
CREATE TABLE token_life_old (
    serial        TEXT PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'lost', 'stolen', 'damaged', 'retired', 'replaced')),
    holder_id     TEXT REFERENCES users (id),
    reason        TEXT NOT NULL DEFAULT '',
    changed_by    TEXT NOT NULL,
    changed_at    TEXT NOT NULL,
    temporary_for TEXT NOT NULL DEFAULT '',
    replaced_by   TEXT NOT NULL DEFAULT '',
    version       INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)
);
-- A found token goes back to lost: the state it can be told apart from least harmfully.
INSERT INTO token_life_old SELECT serial, CASE state WHEN 'found' THEN 'lost' ELSE state END, holder_id, reason, changed_by,
    changed_at, temporary_for, replaced_by, version FROM token_life;
DROP TABLE token_life;
ALTER TABLE token_life_old RENAME TO token_life;
CREATE INDEX token_life_temporary ON token_life (temporary_for, serial) WHERE temporary_for <> '';
