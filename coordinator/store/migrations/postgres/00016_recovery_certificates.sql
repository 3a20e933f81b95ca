-- Recovery certificates: the organisation's backup keys, to whose public keys every
-- escrowed private key is sealed. Only the certificate is kept; the private halves are held
-- outside the coordinator. A retired certificate is kept (archives sealed to it still name
-- it) but no new archive is sealed to it. key_id is protocol.KeyFingerprint of the public key.
-- Keep this file and ../sqlite/00016_recovery_certificates.sql describing the same schema.

-- +goose Up
CREATE TABLE recovery_certificates (
    id            text PRIMARY KEY,
    key_id        text NOT NULL UNIQUE,
    common_name   text NOT NULL,
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    certificate   bytea NOT NULL,
    added_at      timestamptz NOT NULL,
    added_by      text NOT NULL,
    retired_at    timestamptz,
    retired_by    text NOT NULL DEFAULT '',
    retire_reason text NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE recovery_certificates;
