// Package notify tells people what needs them, by e-mail and signed webhooks, from an
// outbox in the coordinator's database.
//
// # Events and recipients
//
// The service decides who hears what (it knows the roles and scopes) and hands the outbox
// a Notice: the event, a key naming the occurrence, typed Data and the recipients. Data is
// a whitelist of plain fields (job, decision, failure, token, rollout, certificate, CRL),
// never a store record: no PIN, activation code or token secret can reach a template.
//
// # The outbox
//
// Outbox.Write renders the notice (templates embedded per event and language, French and
// English: text/template for the subject and text, html/template for the HTML part; a
// person's language, else the configured default; a link to the console page of its job
// or rollout when a console URL is configured) and adds one row per recipient with an
// e-mail address and one per webhook subscribed to the event, in the caller's
// transaction: a change rolled back notifies nobody, a committed one is never lost. Each
// row's dedupe key (event, key, channel, recipient) is unique, so that a transaction run
// again or a second coordinator noticing the same thing adds nothing.
//
// # The sender
//
// Sender.Run claims due rows under a lease (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite
// has one writer), so that two coordinators never send a row at once and a row whose
// sender died is taken up again when its lease ends. It sends each (an e-mail as
// multipart/alternative: its text, and its HTML content in the page of its language),
// and marks it sent; a failure is retried after an exponential back-off with jitter, and after MaxAttempts (or
// at once for a permanent refusal, an SMTP 5xx reply) the row is failed with its last
// error. Delivery is at least once: a coordinator killed between the send and the mark
// sends again once the lease ends, with the same Message-ID and Tokenfleet-Delivery, for
// the receiver's dedupe.
//
// A rate limit per e-mail address holds what goes beyond it (never drops it); held rows go
// out together as one digest once the sliding window has room. Webhooks are not limited:
// their receivers are programs.
//
// # Webhooks
//
// A POST of JSON {id, event, time, language, subject, text, data} with the headers
// Tokenfleet-Event, Tokenfleet-Delivery (the row's ID, constant across retries) and
// Tokenfleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.
// Verify is what a receiver does: recompute the HMAC over the raw body, compare in
// constant time, refuse a t more than DefaultTolerance from its clock.
package notify
