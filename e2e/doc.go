// Package e2e holds tokenfleet's full-system end-to-end tests: the real coordinator (the
// whole server, in-process, on SQLite; in the fault campaign, child processes on SQLite or
// PostgreSQL) and the real agent (in-process, as a child process
// killed with SIGKILL, and as the built tokenfleet-agent binary), RabbitMQ on loopback in a
// vhost of each test's own, and SoftHSM2 as the token, in a token store of each test's own.
// People act through tokenfleetctl (its Main, in-process); what lands on the token is checked
// with tools nobody here wrote: OpenSC's pkcs11-tool and openssl.
//
// What the tests show:
//
//   - TestIssue: a blank token issued behind an approval gate (the requester's own
//     approval refused), the agent on a broker user of its own as in production (every
//     event checked as sent by it); the job's states, steps, job watch and audit trail;
//     one private key on the token, sensitive and never extractable, and its certificate
//     (same public key; the key signs what the certificate verifies; openssl verify
//     against the coordinator's CA); the one-time user PIN, shown to the requester only,
//     logs in, a second reveal is refused; the PINs have the profile's lengths.
//   - TestCSRThenInstallCertificate: a csr job leaves a key and no certificate; an
//     install_certificate job then writes the certificate the coordinator signed for it.
//   - TestRenew: a new key and certificate; the old ones stay until the new certificate is
//     verified (seen while the agent is held at that moment), then they are gone.
//   - TestUnblockPINAfterLockout: a user PIN locked by wrong tries (a fault injector
//     emulating the token's retry counter) fails a job with token.pin_locked; an
//     unblock_pin job sets a new PIN with the SO PIN the coordinator kept; it logs in; the
//     failed job, retried, succeeds.
//   - TestWipe: the token is re-initialised; none of the issued objects or PINs remain,
//     the kept SO PIN still works, and the token is issued again.
//   - TestDuplicateAgentIDRefused: a second agent (the binary) with a taken ID exits with
//     status 3 naming the ID, having said nothing on the broker; the first keeps working.
//   - TestConnectionsClosedMidJob: every broker connection of the vhost closed while the
//     agent generates the key and again while it writes the certificate: the job finishes
//     exactly once.
//   - TestAgentKilledAtEveryStep: the agent, a child process, is killed with SIGKILL at
//     each step of an issue job (dispatch journalled and not acked, during and after
//     initialisation, during and after key generation, CSR made, CSR sent, certificate
//     received, during and after the certificate write) and started again: every job
//     finishes exactly once, with one key and one certificate on one token.
//     TestAgentKilledInOtherKinds does the same in a renew (old certificate removed, old
//     key not yet; new key not journalled), an unblock_pin (new PIN set, not journalled)
//     and a wipe (token re-initialised, not journalled).
//   - TestFaultCampaign: the fault campaign. Jobs of every kind a workstation runs
//     (issue with and without approval, renew, unblock_pin, wipe, re-issue, csr then
//     install_certificate), queued, approved, rejected, cancelled and retried through
//     the API as people do, on real agents (child processes, each on a SoftHSM2 store of
//     its own) and simulated ones (fleetsim, in the test's process, on simulated
//     tokens), while at random moments coordinators (one on SQLite; two on one
//     PostgreSQL database, killed independently) and agents are killed with SIGKILL and
//     started again, and the run's broker connections are closed; `make soak` also
//     restarts the broker's node. A checker then gives a verdict per property: no job
//     lost (each exists and ended as decided), nothing applied twice (per attempt each
//     state once and one end, at most one certificate, no serial twice), each token
//     holds exactly the key and certificate of its last job as pkcs11-tool lists them,
//     the stored certificate byte for byte, and no token initialised that no job
//     accounts for; the audit log verifies; every dead letter was refused and audited
//     with its reason; no child raced or panicked. The seed is printed and named in
//     every failure; TOKENFLEET_SOAK_SEED replays the plan. make test runs a short
//     version (40 jobs, 15 faults, real agents only), make soak the long one (TOKENFLEET_SOAK=long:
//     10,000 jobs and 500 faults on SQLite with 300 simulated agents, more on
//     PostgreSQL and with the broker restarted).
//   - TestRolloutRenewal: three real agents (child processes, a SoftHSM2 store each)
//     issued a certificate each; a renewal rollout created with tokenfleetctl, a canary
//     and two waves, approved once by an approver (its owner's approval refused): every
//     job approved by the rollout as the audit shows, wave after wave, each token holding
//     only the new key and certificate (pkcs11-tool), which openssl verifies against the
//     CA. TestRolloutStandingRenewal: a standing rollout takes up a certificate as it
//     enters its renewal window and renews it once.
//   - TestRolloutFleet: rollouts over simulated agents (1,000; make rollout-fleet 5,000)
//     and two coordinators on PostgreSQL: the brake trips in the canary on failing tokens
//     and holds over engine passes until an approved resumption; coordinators killed
//     mid-wave leave every target exactly one job; an abort creates nothing more and
//     cancels what had not started.
//   - Every other test ends with finalChecks: tokenfleetctl audit verify accepts the audit log;
//     every log line is one JSON object without a field twice (TestLogLineCheck shows the
//     check); and checkNoPINs: no PIN the test's jobs set (user PINs as revealed, SO PINs
//     and every other PIN the coordinator keeps, opened with its result key) appears in
//     clear, hex or base64 in any log line (coordinator and agents, debug level), any file
//     of an agent's data directory (journal, -wal, -shm; a killed agent's as it left them),
//     the coordinator's data directory (database, -wal), or any message on the broker (a
//     tap queue bound to the events, commands and dead-letter exchanges).
//     TestSecretScanFindsPINs shows the scan finds a PIN in each encoding.
//   - The web console in a real Chromium (Debian's chromium, driven with chromedp; every
//     page checked with axe-core, which fails the test on any serious or critical
//     violation, and photographed into testdata/screenshots/<test>/). TestConsoleIssue:
//     the help desk requests a token in the console; the approver finds it in her queue
//     with holder, subject, profile, agent and binding hash, and approves; the requester's
//     job page, open all along, follows the real agent's progress on SoftHSM2 live (the
//     state and steps change, the page is not reloaded, one event stream is its only
//     request) until it succeeds; the PIN is revealed once
//     (it logs in to the token) and a second reveal is refused; the auditor verifies the
//     audit log; no page writes an error to the browser's console (a script the CSP
//     refused among them); the session cookie is HttpOnly, SameSite=Lax and unreadable by
//     scripts, and the CSP allows no inline script or style. TestConsoleRefusals: a wrong
//     password (answered as for an unknown user), self-approval, an approver of another
//     organisation, a form posted without its CSRF token (then with it, accepted), a
//     signed-out session; and a person at the keyboard alone signs in (Tab, Enter) and
//     skips to the content.
//     TestConsoleSessionTimeout: a session idle past the timeout goes back to sign-in.
//     TestConsoleTLS: over TLS the session cookie is __Host-, Secure, HttpOnly, Lax.
//     TestConsoleSingleSignOn: OpenID Connect sign-in against a real provider on
//     loopback, and an ID token for another audience and an expired one refused.
//     TestBrowserHarness shows the harness's checks on a page served in the test: axe-core
//     reports an image without alt text and an unlabelled field, a CSP refusal shows as a
//     console error, a form without its CSRF field is refused, and a Secure cookie set
//     over plain HTTP on 127.0.0.1 comes back (so the console's tests need no TLS).
//
// Every test has its own coordinator (SQLite), broker vhost and SoftHSM2 token store, so
// tests never see each other's tokens; they do not run in parallel (the SoftHSM2 store of
// the process is chosen by SOFTHSM2_CONF when an agent in it loads the module). The
// console's tests that run no agent (refusals, timeout, single sign-on, the harness) do,
// each person with a Chromium of their own.
//
// The package has no code besides the tests.
package e2e
