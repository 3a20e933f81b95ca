// Package store is the coordinator's persistent store: organisations, people and their API
// tokens, agents and tokens, certificates, profiles, jobs with their attempts, steps and
// timeline, approvals, the hash-chained audit log, and the outbox and inbox of the message
// dispatcher.
//
// SQLite (one file, the embedded default) and PostgreSQL (several coordinators) sit behind
// one implementation over database/sql; a small dialect layer covers what differs
// (placeholders, how times travel, row locks, error codes). Both back ends pass the same
// suite, package storetest. The schema lives in migrations/<dialect>/, applied by goose on
// Open; both files describe one schema and change together.
//
// Decisions:
//
//   - Writes happen only in transactions (Store.InTx), so a job's state change, its
//     timeline event, its audit entry and the messages it causes commit together or not at
//     all. Reads are offered on the Store and inside a transaction.
//   - No lost updates: jobs and profiles carry a row version; changes are compare-and-set
//     and give ErrConflict when the row moved on. Legality of a change (package jobs) is
//     decided by the caller, before the store is called.
//   - The audit log is append-only (no method changes it; database triggers refuse UPDATE,
//     DELETE and TRUNCATE) and linear: an append locks the chain-head row until its
//     transaction ends, on PostgreSQL with SELECT ... FOR UPDATE, on SQLite by the single
//     writer, so entries from several coordinators never fork the chain. The caller's seal
//     function (audit.Seal) hashes; the store checks the link.
//   - Times are UTC with microsecond precision, what both back ends keep: timestamptz on
//     PostgreSQL, fixed-width text on SQLite (ordered as strings, readable in the shell).
//     JSON whose bytes are hashed (audit details) or forwarded (message headers) is kept
//     verbatim (json, text); attributes and token flags are jsonb on PostgreSQL.
//   - SQLite: one writer connection with BEGIN IMMEDIATE, a pool of read-only readers, WAL,
//     synchronous=FULL, foreign keys on, busy_timeout 5 s, file mode 0600.
//   - API tokens are tfk_<id>_<secret> with a 256-bit secret; only the SHA-256 of the token
//     is stored, compared in constant time after a lookup by ID.
//   - IDs the store makes are 128-bit random, lower-case base32: URL-safe.
package store
