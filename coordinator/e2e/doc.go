// Package e2e holds the end-to-end test of the coordinator core: it builds the real
// tokenfleet-coordinator and tokenfleetctl binaries, starts the coordinator on an empty
// data directory, and drives it with tokenfleetctl as people would — organisations,
// people, a profile, a job behind an approval gate, refused and accepted approvals,
// rejection, cancellation — then tampers with the SQLite file by hand and checks that
// tokenfleetctl audit verify names the entry. Its dispatch test kills the coordinator
// with SIGKILL while a committed dispatch waits in its outbox and checks the restarted
// coordinator sends it. The package has no code besides the tests.
package e2e
