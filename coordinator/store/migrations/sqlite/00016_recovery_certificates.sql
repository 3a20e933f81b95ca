-- Recovery certificates: the organisation's backup keys, to whose public keys every
-- escrowed private key is sealed. Only the certificate is kept; the private halves are held
-- outside the coordinator. A retired certificate is kept (archives sealed to it still name
-- it) but no new archive is sealed to it. key_id is protocol.KeyFingerprint of the public key.
-- Keep this file and ../postgres/00016_recovery_certificates.sql describing the same schema.

-- +goose Up
CREATE TABLE recovery_certificates (
    id            TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL UNIQUE,
    common_name   TEXT NOT NULL,
    not_before    TEXT NOT NULL,
    not_after     TEXT NOT NULL,
    certificate   BLOB NOT NULL,
    added_at      TEXT NOT NULL,
    added_by      TEXT NOT NULL,
    retired_at    TEXT,
    retired_by    TEXT NOT NULL DEFAULT '',
    retire_reason TEXT NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE recovery_certificates;
