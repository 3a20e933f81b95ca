package store

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// Sentinel errors; every error the store returns for these cases wraps one of them, so the
// API can map them to codes.
var (
	// ErrNotFound: the record does not exist (or, for API tokens, does not authenticate).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique value is taken, or the record changed since it was read
	// (compare-and-set failure); re-read and decide again.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input is malformed or refers to something that does not exist.
	ErrInvalid = errors.New("invalid")
	// ErrAborted: the database rolled the transaction back to break a deadlock or a
	// serialization conflict with another (PostgreSQL's 40P01 and 40001), which
	// coordinators sharing one database meet under load. Nothing of it was written;
	// InTx runs it again before returning this.
	ErrAborted = errors.New("aborted by the database to resolve a conflict with another transaction")
)

// Drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Config chooses and locates the database.
type Config struct {
	// Driver is "sqlite" or "postgres".
	Driver string
	// DSN is, for SQLite, the path of the database file (created with mode 0600 in an
	// existing directory); for PostgreSQL, a URL or key=value connection string.
	DSN string
	// MaxConns bounds the PostgreSQL connection pool; 0 means 10. SQLite always uses one
	// writer and a few readers.
	MaxConns int
}

// Reader is every read the store offers, on the Store (outside a transaction) and on a Tx
// (inside one).
type Reader interface {
	GetOrganization(ctx context.Context, id string) (Organization, error)
	GetOrganizationByName(ctx context.Context, name string) (Organization, error)
	ListOrganizations(ctx context.Context, p Page) (orgs []Organization, next string, err error)

	GetUser(ctx context.Context, id string) (User, error)
	GetUserByUsername(ctx context.Context, username string) (User, error)
	ListUsers(ctx context.Context, f UserFilter, p Page) (users []User, next string, err error)

	// LookupAPIToken authenticates a presented token: it returns the token's record and its
	// owner, or ErrNotFound when the token is malformed, unknown, wrong, revoked, expired at
	// now, or its owner is disabled.
	LookupAPIToken(ctx context.Context, presented string, now time.Time) (APIToken, User, error)
	ListAPITokens(ctx context.Context, userID string) ([]APIToken, error)
	GetAPIToken(ctx context.Context, id string) (APIToken, error)

	// GetCredential returns the user's password hash and lockout state.
	GetCredential(ctx context.Context, userID string) (Credential, error)
	// LookupSession returns the session whose secret is presented, open or ended; a
	// malformed or unknown secret is ErrNotFound.
	LookupSession(ctx context.Context, secret string) (Session, error)
	GetSession(ctx context.Context, id string) (Session, error)
	// ListOpenSessions returns the user's sessions neither ended nor expired at at, oldest
	// first.
	ListOpenSessions(ctx context.Context, userID string, at time.Time) ([]Session, error)
	// GetOIDCIdentity returns the link of an identity provider's subject to a user.
	GetOIDCIdentity(ctx context.Context, issuer, subject string) (OIDCIdentity, error)
	// ListOIDCIdentities returns the identities linked to the user, by issuer and subject.
	ListOIDCIdentities(ctx context.Context, userID string) ([]OIDCIdentity, error)

	GetCustomRole(ctx context.Context, name string) (CustomRole, error)
	// GetCustomRoles returns those of names that are custom roles, by name; other names
	// (built-in roles, roles deleted since) are passed over.
	GetCustomRoles(ctx context.Context, names []jobs.Role) ([]CustomRole, error)
	// ListCustomRoles returns every custom role by name.
	ListCustomRoles(ctx context.Context) ([]CustomRole, error)

	GetRecoveryCertificate(ctx context.Context, id string) (RecoveryCertificate, error)
	// ListRecoveryCertificates returns the recovery certificates, those in use first, each
	// group by expiry; retired ones only when asked.
	ListRecoveryCertificates(ctx context.Context, withRetired bool) ([]RecoveryCertificate, error)

	GetEscrowedKey(ctx context.Context, id string) (EscrowedKey, error)
	// GetEscrowedKeyOfAttempt returns the key archived with a server_keygen job's attempt.
	GetEscrowedKeyOfAttempt(ctx context.Context, jobID string, attempt int) (EscrowedKey, error)
	// ListEscrowedKeys returns the escrowed keys f selects, oldest first.
	ListEscrowedKeys(ctx context.Context, f EscrowedKeyFilter) ([]EscrowedKey, error)
	// ListHolderEncryptionKeys returns a holder's encryption keys, oldest first.
	ListHolderEncryptionKeys(ctx context.Context, holderID string) ([]HolderEncryptionKey, error)
	// GetKeyRequest returns what a recover_key or register_certificate job is about.
	GetKeyRequest(ctx context.Context, jobID string) (KeyRequest, error)

	GetAgent(ctx context.Context, id string) (Agent, error)
	ListAgents(ctx context.Context, f AgentFilter, p Page) (agents []Agent, next string, err error)
	// CheckAgentSecret returns the agent whose secret (IssueAgentSecret) was presented;
	// an unknown agent or a wrong secret is ErrNotFound.
	CheckAgentSecret(ctx context.Context, id, presented string) (Agent, error)
	// AgentCredentials returns the broker credentials kept for the agent, sealed to its
	// key; nil when none.
	AgentCredentials(ctx context.Context, id string) ([]byte, error)
	GetEnrolmentKey(ctx context.Context, id string) (EnrolmentKey, error)
	ListEnrolmentKeys(ctx context.Context, f EnrolmentKeyFilter, p Page) (keys []EnrolmentKey, next string, err error)

	GetToken(ctx context.Context, serial string) (Token, error)
	ListTokens(ctx context.Context, f TokenFilter, p Page) (tokens []Token, next string, err error)

	// GetTokenLife returns where a token is in its life cycle; ErrNotFound for a token
	// never moved, which is active.
	GetTokenLife(ctx context.Context, serial string) (TokenLife, error)
	// ListTemporaryTokens returns the tokens standing in for original, by serial.
	ListTemporaryTokens(ctx context.Context, original string) ([]TokenLife, error)
	// ListTokenLifeEvents returns a token's life-cycle changes, oldest first.
	ListTokenLifeEvents(ctx context.Context, serial string) ([]TokenLifeEvent, error)
	// GetTokenRequest returns the token a job is issued for (a temporary token's original,
	// a replacement's old token); ErrNotFound for a job with none.
	GetTokenRequest(ctx context.Context, jobID string) (TokenRequest, error)

	GetCertificate(ctx context.Context, serial string) (Certificate, error)
	ListCertificates(ctx context.Context, f CertificateFilter, p Page) (certs []Certificate, next string, err error)

	GetProfile(ctx context.Context, name string) (Profile, error)
	GetProfileVersion(ctx context.Context, name string, version int64) (Profile, error)
	ListProfiles(ctx context.Context) ([]Profile, error)

	GetJob(ctx context.Context, id string) (Job, error)
	// GetJobs returns the jobs named, in the order of ids, in one query for every few
	// hundred; ErrNotFound names the first that does not exist.
	GetJobs(ctx context.Context, ids []string) ([]Job, error)
	// GetJobByIdempotencyKey returns the job a requester created with an idempotency key.
	GetJobByIdempotencyKey(ctx context.Context, requesterID, key string) (Job, error)
	ListJobs(ctx context.Context, f JobFilter, p Page) (jobs []Job, next string, err error)
	ListJobEvents(ctx context.Context, jobID string) ([]JobEvent, error)
	// ListJobEventsOf returns the timelines of the jobs named, by job ID, each in order.
	ListJobEventsOf(ctx context.Context, jobIDs []string) (map[string][]JobEvent, error)
	// ListRegister lists the crypto-device register: every issue job that succeeded on a
	// token, oldest first, with the token and what took it back.
	ListRegister(ctx context.Context, f RegisterFilter, p Page) (entries []RegisterEntry, next string, err error)
	ListJobSteps(ctx context.Context, jobID string) ([]JobStep, error)
	ListJobAttempts(ctx context.Context, jobID string) ([]JobAttempt, error)
	GetJobAttempt(ctx context.Context, jobID string, attempt int) (JobAttempt, error)

	// GetTokenPIN returns the newest PIN of this purpose recorded for the token.
	GetTokenPIN(ctx context.Context, tokenSerial, purpose string) (TokenPIN, error)

	ListApprovals(ctx context.Context, jobID string) ([]Approval, error)

	GetRollout(ctx context.Context, id string) (Rollout, error)
	// GetRolloutByIdempotencyKey returns the rollout a user created with an idempotency key.
	GetRolloutByIdempotencyKey(ctx context.Context, createdBy, key string) (Rollout, error)
	ListRollouts(ctx context.Context, f RolloutFilter, p Page) (rollouts []Rollout, next string, err error)
	ListRolloutTargets(ctx context.Context, rolloutID string, f RolloutTargetFilter, p Page) (targets []RolloutTarget, next string, err error)
	// RolloutCounts counts the rollout's targets by wave, and by the state and last error
	// code of their job (State "" for targets without a job yet), in one aggregate query.
	RolloutCounts(ctx context.Context, rolloutID string) ([]RolloutCount, error)
	// RolloutDoneSince counts the rollout's jobs that are in a terminal state and were
	// last updated at or after since: the recent rate of progress.
	RolloutDoneSince(ctx context.Context, rolloutID string, since time.Time) (int, error)
	// ListRolloutApprovals returns the rollout's decisions, oldest first.
	ListRolloutApprovals(ctx context.Context, rolloutID string) ([]RolloutApproval, error)
	// HasRolloutTarget reports whether the rollout already has a target for the
	// certificate.
	HasRolloutTarget(ctx context.Context, rolloutID, certificateSerial string) (bool, error)

	// AuditHead returns the last entry's sequence number and hash ({0, audit.GenesisHash}
	// for an empty log): what a verifier compares the end of the chain with.
	AuditHead(ctx context.Context) (audit.Head, error)
	ListAudit(ctx context.Context, f AuditFilter, p Page) (entries []audit.Entry, next string, err error)
	// AuditEntries yields every entry from fromSeq on, in order, reading in batches so that
	// no transaction stays open for the whole log; a read error is yielded and ends it.
	// It is what audit.VerifySeq takes.
	AuditEntries(ctx context.Context, fromSeq int64) iter.Seq2[audit.Entry, error]
	// ListAuditCheckpoints returns the kept checkpoints of the audit chain head, newest
	// first.
	ListAuditCheckpoints(ctx context.Context, p Page) (checkpoints []audit.Checkpoint, next string, err error)

	// ListUnsentOutbox returns up to limit unsent messages, oldest first.
	ListUnsentOutbox(ctx context.Context, limit int) ([]OutboxMessage, error)
	GetOutbox(ctx context.Context, id int64) (OutboxMessage, error)
	GetInbox(ctx context.Context, messageID string) (InboxEntry, error)

	GetNotification(ctx context.Context, id string) (Notification, error)
	// ListNotifications lists notifications, newest first.
	ListNotifications(ctx context.Context, f NotificationFilter, p Page) (ns []Notification, next string, err error)
	// NotificationDeliveries counts the messages (a digest is one) sent over channel to
	// recipient after since, and gives the time of the oldest: what a rate limit over a
	// sliding window needs (a slot frees a window after the oldest was sent).
	NotificationDeliveries(ctx context.Context, channel, recipient string, since time.Time) (n int, oldest time.Time, err error)

	// FleetStats counts jobs, unsent outbox messages, agents and certificates in use, in
	// a few aggregate queries: what the metrics read at each scrape.
	FleetStats(ctx context.Context, now time.Time) (FleetStats, error)
}

// Writer is every change the store offers; it exists only inside a transaction. After a
// method returns an error, return it from the InTx function: on PostgreSQL the
// transaction is aborted and accepts no further statements.
type Writer interface {
	// Savepoint marks a point in the transaction: RollbackToSavepoint undoes what was
	// written since and leaves the transaction going on; ReleaseSavepoint keeps it and
	// forgets the mark. Marks nest; each call pair acts on the latest.
	Savepoint(ctx context.Context) error
	RollbackToSavepoint(ctx context.Context) error
	ReleaseSavepoint(ctx context.Context) error

	CreateOrganization(ctx context.Context, o Organization) (Organization, error)

	CreateUser(ctx context.Context, u User) (User, error)
	// UpdateUser replaces every field of the user but ID and Created, roles included.
	UpdateUser(ctx context.Context, u User) (User, error)

	// CreateAPIToken makes a new random token for userID and returns its record and the
	// token itself, which is not stored and cannot be shown again. A zero expires never
	// expires.
	CreateAPIToken(ctx context.Context, userID, name string, expires time.Time) (APIToken, string, error)
	// TouchAPIToken records a use. To spare a write per request it only writes when the
	// recorded last use is older than a minute.
	TouchAPIToken(ctx context.Context, id string, at time.Time) error
	RevokeAPIToken(ctx context.Context, id string, at time.Time) error
	// CreateBootstrapAPIToken makes the first administrator's token: it never expires and
	// is marked Bootstrap.
	CreateBootstrapAPIToken(ctx context.Context, userID string) (APIToken, string, error)

	// SetPasswordHash replaces the user's password hash ("" removes the password) and
	// clears their failures and lock.
	SetPasswordHash(ctx context.Context, userID, hash string, at time.Time) error
	// AddSignInFailure counts a wrong password unless sign-in is locked at at, and
	// returns the state after it (a locked one unchanged). The row stays locked until the
	// transaction ends, so concurrent failures all count, and none after a lock.
	AddSignInFailure(ctx context.Context, userID string, at time.Time) (Credential, error)
	// LockSignIn locks password sign-in until until, counts the lock and clears the
	// failures.
	LockSignIn(ctx context.Context, userID string, until time.Time) (Credential, error)
	// ResetSignInFailures clears the failures, the locks counted and the lock: a success.
	ResetSignInFailures(ctx context.Context, userID string) error

	// CreateSession starts a session like s (UserID, Method, Source and its times) with a
	// new ID, CSRF token and secret, and returns its record and the secret, which is not
	// stored and cannot be shown again.
	CreateSession(ctx context.Context, s Session) (Session, string, error)
	// TouchSession records a use and moves the idle end. To spare a write per request it
	// only writes when the recorded last use is older than SessionTouchEvery of the idle
	// timeout (idleExpires - at); an ended session is left as it is.
	TouchSession(ctx context.Context, id string, at, idleExpires time.Time) error
	// EndSession ends an open session for reason (a Session* reason) and returns it; an
	// ended one gives ErrConflict.
	EndSession(ctx context.Context, id string, at time.Time, reason string) (Session, error)
	// EndUserSessions ends every open session of the user but exceptID ("" for none) and
	// returns those it ended.
	EndUserSessions(ctx context.Context, userID, exceptID string, at time.Time, reason string) ([]Session, error)
	// PurgeSessions deletes the sessions that ended, or reached their absolute end,
	// before before.
	PurgeSessions(ctx context.Context, before time.Time) (int64, error)

	// LinkOIDCIdentity records the link of an identity provider's subject to a user; a
	// subject linked already gives ErrConflict.
	LinkOIDCIdentity(ctx context.Context, o OIDCIdentity) (OIDCIdentity, error)
	// TouchOIDCIdentity records a sign-in with the identity and the e-mail address the
	// provider gave.
	TouchOIDCIdentity(ctx context.Context, issuer, subject, email string, at time.Time) error
	// UnlinkOIDCIdentities removes every identity linked to the user and returns them.
	UnlinkOIDCIdentities(ctx context.Context, userID string) ([]OIDCIdentity, error)

	// CreateCustomRole gives ErrConflict when the name is taken and ErrInvalid when it is
	// malformed, a built-in role's, or a permission is unknown.
	CreateCustomRole(ctx context.Context, r CustomRole) (CustomRole, error)
	// UpdateCustomRole replaces the description, organisation and permissions.
	UpdateCustomRole(ctx context.Context, r CustomRole) (CustomRole, error)
	// DeleteCustomRole removes the role and every user's holding of it.
	DeleteCustomRole(ctx context.Context, name string) error

	// AddRecoveryCertificate keeps a recovery certificate under a new ID; a certificate of
	// a key already kept gives ErrConflict.
	AddRecoveryCertificate(ctx context.Context, c RecoveryCertificate) (RecoveryCertificate, error)
	// RetireRecoveryCertificate marks it retired; ErrNotFound when there is no such
	// certificate, ErrConflict when it is retired already.
	RetireRecoveryCertificate(ctx context.Context, id, by, reason string, at time.Time) (RecoveryCertificate, error)

	// AddEscrowedKey keeps the archive of a job attempt's key under a new ID, pending
	// unless a state is given; a second for the same attempt gives ErrConflict.
	AddEscrowedKey(ctx context.Context, k EscrowedKey) (EscrowedKey, error)
	// SetEscrowedKeyState moves a key from one state to another; ErrConflict when it is
	// not in from.
	SetEscrowedKeyState(ctx context.Context, id string, from, to EscrowedKeyState, reason string, at time.Time) (EscrowedKey, error)
	// SetEscrowedKeyToken records the token a key went onto (a job naming no token).
	SetEscrowedKeyToken(ctx context.Context, id, tokenSerial string) error
	// RecordEscrowedKeyRecovery records where a recovery put the key (a token serial, which
	// becomes the key's token, or RecoveredToOfficer) and by which job.
	RecordEscrowedKeyRecovery(ctx context.Context, id, jobID, to string, at time.Time) (EscrowedKey, error)
	// AddHolderEncryptionKey records a holder's encryption key; a second for the same job
	// gives ErrConflict.
	AddHolderEncryptionKey(ctx context.Context, k HolderEncryptionKey) (HolderEncryptionKey, error)
	// AddKeyRequest records what a recover_key job (an escrowed key and a target) or a
	// register_certificate job (a CKA_ID) is about.
	AddKeyRequest(ctx context.Context, k KeyRequest) error
	// SetKeyDelivery records an officer's delivery for an attempt (sealed nil for a PKCS#12
	// the officer kept); ErrConflict when that attempt, or a later one, was delivered.
	SetKeyDelivery(ctx context.Context, jobID string, attempt int, sealed []byte, by string, at time.Time) (KeyRequest, error)

	// CreateAgent enrols an agent. A taken ID gives ErrConflict naming the host holding it.
	CreateAgent(ctx context.Context, a Agent) (Agent, error)
	// CreateAgents enrols a batch of agents in a few statements, all or nothing: a
	// malformed, repeated or taken ID or broker user gives an *AgentBatchError naming each
	// such agent by its position, and nothing is written.
	CreateAgents(ctx context.Context, as []Agent) ([]Agent, error)
	// UpdateAgent replaces the hostname, OS, version, public key and broker user.
	UpdateAgent(ctx context.Context, a Agent) (Agent, error)
	ApproveAgent(ctx context.Context, id, by string, at time.Time) (Agent, error)
	// SetAgentState moves an agent in its life cycle when it is in one of from (any when
	// empty); another state is ErrConflict. Leaving active drops its kept credentials.
	SetAgentState(ctx context.Context, id string, c AgentStateChange, from ...AgentState) (Agent, error)
	// IssueAgentSecret gives the agent a new secret (tfa_...), replacing any earlier one.
	IssueAgentSecret(ctx context.Context, id string) (string, error)
	// SetAgentCredentials keeps an active agent's broker credentials, sealed to its key.
	SetAgentCredentials(ctx context.Context, id string, sealed []byte, at time.Time) error
	// CreateEnrolmentKeys makes n activation codes or enrolment keys like k and returns
	// their records and secrets (tfe_...), which are never stored.
	CreateEnrolmentKeys(ctx context.Context, k EnrolmentKey, n int) ([]EnrolmentKey, []string, error)
	// UseEnrolmentKey takes one use of the key whose secret is presented: ErrNotFound for
	// a malformed, unknown or wrong secret, *KeyUnusableError for a revoked, expired or
	// used-up one.
	UseEnrolmentKey(ctx context.Context, presented string, at time.Time) (EnrolmentKey, error)
	RevokeEnrolmentKey(ctx context.Context, id, by string, at time.Time) (EnrolmentKey, error)
	// RecordAgentSeen marks the agent online and seen at at; heartbeat also records it
	// as the last heartbeat.
	RecordAgentSeen(ctx context.Context, id string, at time.Time, heartbeat bool) error
	SetAgentOffline(ctx context.Context, id string) error
	// RecordHeartbeats records many agents' heartbeats at once: each agent named is marked
	// online with the heartbeat as its last heartbeat and last message, unless the agent
	// already has a later heartbeat (times never move back). It returns how many agents
	// it changed; agents that are not enrolled are passed over.
	RecordHeartbeats(ctx context.Context, beats []Heartbeat) (int64, error)
	// RecordAgentRefusal records the last message claiming to be agent id that was
	// refused, replacing the one before; ErrNotFound when no such agent is enrolled.
	RecordAgentRefusal(ctx context.Context, id string, r AgentRefusal) error
	// MarkAgentsOffline marks offline every online agent whose last heartbeat is older
	// than before, and returns how many it marked.
	MarkAgentsOffline(ctx context.Context, before time.Time) (int64, error)

	// UpsertToken records a token as an agent reported it.
	UpsertToken(ctx context.Context, t Token) (Token, error)

	AddCertificate(ctx context.Context, c Certificate) (Certificate, error)
	// RevokeCertificate gives ErrConflict when the certificate is already revoked, unless
	// it is on hold (certificateHold) and reason is another: the hold then becomes that
	// revocation, keeping its time.
	RevokeCertificate(ctx context.Context, serial string, at time.Time, reason int) (Certificate, error)
	// ReleaseCertificateHold makes a certificate on hold valid again; one that is not on
	// hold gives ErrConflict.
	ReleaseCertificateHold(ctx context.Context, serial string) (Certificate, error)

	// SetTokenLife records a token's new state (expectedVersion 0 creates its record;
	// otherwise compare-and-set on the version, ErrConflict when it moved) with its
	// history event e (From, JobID; the rest comes from l).
	SetTokenLife(ctx context.Context, l TokenLife, expectedVersion int64, e TokenLifeEvent) (TokenLife, error)
	// AddTokenRequest records the token a job is issued for; one per job.
	AddTokenRequest(ctx context.Context, r TokenRequest) error

	// PutProfile creates a profile (expectedVersion 0) or replaces the content of the
	// version the caller read (compare-and-set); each version is kept. ContentHash is
	// required: the profile package's hash, which jobs record.
	PutProfile(ctx context.Context, p Profile, expectedVersion int64) (Profile, error)

	// CreateJob stores a new job at attempt 1, version 1, with its first timeline event
	// (actor: the requester).
	CreateJob(ctx context.Context, j Job) (Job, error)
	// UpdateJobState moves job id from state from to state to if it is still in state
	// from at row version expectedVersion, and records the transition in the timeline.
	// Otherwise it returns ErrConflict (or ErrNotFound) and changes nothing.
	UpdateJobState(ctx context.Context, id string, from, to jobs.State, expectedVersion int64, c JobChange) (Job, error)
	// UpdateJobStates is UpdateJobState for many jobs that take the same change to the
	// same state, in a few statements for the whole set rather than a few a job: each job
	// moves only if it is still in its From state at its expected version, and if one is
	// not, none moves and it returns ErrConflict (or ErrNotFound) naming it. It returns the
	// jobs as they are now, in the order of moves.
	UpdateJobStates(ctx context.Context, moves []JobMove, to jobs.State, c JobChange) ([]Job, error)
	// EditJob replaces what a pending request asks for (compare-and-set on the version)
	// and restarts its StateSince.
	EditJob(ctx context.Context, id string, expectedVersion int64, e JobEdit) (Job, error)
	// AddJobStep records a step and the job's progress after it (jobs.AdvanceStep computes
	// it from the job at expectedVersion). A step of an attempt other than the job's current
	// one gives ErrConflict: attempt numbers fence stale results.
	AddJobStep(ctx context.Context, s JobStep, p jobs.Progress, expectedVersion int64) (Job, error)

	// RecordAttemptDispatch records the dispatch message written for an attempt; a second
	// one gives ErrConflict (an attempt is dispatched once).
	RecordAttemptDispatch(ctx context.Context, jobID string, attempt int, messageID string) error
	// SetAttemptWaiting records why an attempt is not dispatched yet and reports whether
	// the reason changed.
	SetAttemptWaiting(ctx context.Context, jobID string, attempt int, reason string) (changed bool, err error)
	// RecordAttemptKey records the public key reported for an attempt. The same key again
	// is no change; another key gives ErrConflict: the first report counts.
	RecordAttemptKey(ctx context.Context, jobID string, attempt int, publicKey []byte) error
	// RecordAttemptCSR records the CSR accepted for an attempt; a second one gives
	// ErrConflict: one CSR per attempt.
	RecordAttemptCSR(ctx context.Context, jobID string, attempt int, csr []byte, at time.Time) error
	// RecordAttemptToken records the token an attempt works on. The same serial again is
	// no change; another serial gives ErrConflict: an attempt works on one token.
	RecordAttemptToken(ctx context.Context, jobID string, attempt int, serial string) error
	// MarkAttemptReinitialised records that the attempt re-initialised its token.
	MarkAttemptReinitialised(ctx context.Context, jobID string, attempt int) error
	// RecordAttemptResult records the message ID of the attempt's result and what it said;
	// a second, other one gives ErrConflict: one result per attempt.
	RecordAttemptResult(ctx context.Context, jobID string, attempt int, messageID, summary string) error
	// ReleaseAgentTokens clears the agent of the tokens recorded under agentID whose
	// serial is not in keep (the agent no longer reports them), so that another agent
	// may claim them; it returns how many it released.
	ReleaseAgentTokens(ctx context.Context, agentID string, keep []string) (int64, error)

	// AddTokenPIN keeps a sealed PIN; the same job, attempt and purpose twice gives
	// ErrConflict.
	AddTokenPIN(ctx context.Context, p TokenPIN) (TokenPIN, error)
	// MarkTokenPINRevealed records that a PIN was shown to its holder; a PIN already
	// revealed gives ErrConflict (a PIN is revealed at most once).
	MarkTokenPINRevealed(ctx context.Context, id int64, at time.Time) error

	// AddApproval records a decision; the same approver deciding twice at one gate on the
	// same bound hash in the same attempt gives ErrConflict.
	AddApproval(ctx context.Context, a Approval) (Approval, error)

	// CreateRollout stores a rollout at version 1 with its targets, inserted a few hundred
	// to a statement. Targets keep their Seq (1.. and distinct; 0 takes the position in
	// targets), and the rollout's TargetCount is len(targets). A second open standing
	// rollout for one profile gives ErrConflict naming the first.
	CreateRollout(ctx context.Context, r Rollout, targets []RolloutTarget) (Rollout, error)
	// UpdateRollout replaces every mutable field of the rollout (not ID, Spec, Created,
	// CreatedBy, Standing, ProfileName, nor TargetCount, which the target writes keep) if
	// it is still at expectedVersion, and sets Updated to now. Otherwise it returns
	// ErrConflict (or ErrNotFound) and changes nothing.
	UpdateRollout(ctx context.Context, r Rollout, expectedVersion int64) (Rollout, error)
	// LockRollout reads the rollout and holds its row until the transaction ends (on
	// PostgreSQL; SQLite has one writer): a change read this way waits for a concurrent
	// writer to commit and then sees its version, so its compare-and-set cannot lose to
	// an engine that writes the rollout batch after batch.
	LockRollout(ctx context.Context, id string) (Rollout, error)
	// AddRolloutTargets appends targets to a rollout (a standing one's renewals): each
	// gets the next seq after the current highest, in the order given; a target the
	// rollout already has (same agent, token and certificate) is passed over. It updates
	// TargetCount (not Version) and returns how many it added.
	AddRolloutTargets(ctx context.Context, rolloutID string, ts []RolloutTarget) (added int, err error)
	// AttachRolloutJobs gives targets their job. Every seq named must exist and have no
	// job yet: otherwise it returns ErrConflict naming the first that does not, and
	// attaches none.
	AttachRolloutJobs(ctx context.Context, rolloutID string, links []RolloutJobLink) error
	// AddRolloutApproval records a decision; the same approver deciding twice on the same
	// bound hash in the same round gives ErrConflict.
	AddRolloutApproval(ctx context.Context, a RolloutApproval) (RolloutApproval, error)

	// AppendAudit adds e at the end of the audit log, chained by seal. Appends are
	// serialised (the chain head is locked until the transaction ends), so e is checked
	// at once but chained and stored, with every entry the transaction was given, when its
	// work is done, just before it commits: the head is the last lock a transaction takes,
	// and it is never held while waiting for a row. Entries given since a savepoint rolled
	// back to are dropped with its rows. The entry returned has its time; its sequence
	// number and hash are given at the commit.
	AppendAudit(ctx context.Context, e audit.Entry, seal SealFunc) (audit.Entry, error)
	// AppendAudits is AppendAudit for several entries, chained in their order under one
	// lock of the chain head, and inserted a few hundred to a statement.
	AppendAudits(ctx context.Context, es []audit.Entry, seal SealFunc) ([]audit.Entry, error)
	// AddAuditCheckpoint keeps a signed checkpoint of the audit chain head. The store does
	// not check the signature: that is the signer's and the auditors' business.
	AddAuditCheckpoint(ctx context.Context, c audit.Checkpoint) error

	AddOutbox(ctx context.Context, m OutboxMessage) (OutboxMessage, error)
	// MarkOutboxSent records the broker's confirmation; marking a sent message again keeps
	// the first time and is not an error.
	MarkOutboxSent(ctx context.Context, id int64, at time.Time) error
	// MarkOutboxesSent is MarkOutboxSent for many messages, in one statement for every
	// few hundred; ErrNotFound names a message that does not exist.
	MarkOutboxesSent(ctx context.Context, ids []int64, at time.Time) error
	RecordOutboxFailure(ctx context.Context, id int64, reason string) error
	PurgeSentOutbox(ctx context.Context, sentBefore time.Time) (int64, error)

	// AddNotifications adds notifications to the outbox, pending and due at NextAttempt
	// (zero: at once); one whose DedupeKey is taken is passed over. It returns how many it
	// added.
	AddNotifications(ctx context.Context, ns []Notification) (added int, err error)
	// ClaimNotifications leases up to c.Limit pending notifications due at c.Now and not
	// leased then, to c.Owner until c.LeaseUntil, and returns them, soonest due first. Two
	// senders never claim a row at once; a row whose lease ran out may be claimed again.
	ClaimNotifications(ctx context.Context, c NotificationClaim) ([]Notification, error)
	// MarkNotificationsSent records the notifications as sent at at in the message
	// deliveryID, counting the attempt; a row sent already is left as it is.
	MarkNotificationsSent(ctx context.Context, ids []string, deliveryID string, at time.Time) error
	// RetryNotification counts a failed attempt of a pending notification, keeps its
	// error and makes it due again at next.
	RetryNotification(ctx context.Context, id string, next time.Time, lastError string) error
	// FailNotification gives a pending notification up: its last attempt counted, failed
	// with lastError.
	FailNotification(ctx context.Context, id, lastError string) error
	// HoldNotifications holds pending notifications back for the recipient's rate limit
	// until until, without counting an attempt; held ones go out as a digest.
	HoldNotifications(ctx context.Context, ids []string, until time.Time) error
	// ReleaseNotifications gives back, unsent and due as before, the pending rows owner
	// leased; rows leased by another sender are left alone.
	ReleaseNotifications(ctx context.Context, owner string, ids []string) error

	// RecordInbox records a processed message ID and reports whether it was already
	// there, in which case the message is a duplicate and nothing is written.
	RecordInbox(ctx context.Context, e InboxEntry) (alreadySeen bool, err error)
	PurgeInbox(ctx context.Context, receivedBefore time.Time) (int64, error)
}

// Tx is a transaction: reads see its own writes.
type Tx interface {
	Reader
	Writer
}

// Store is the coordinator's store.
type Store interface {
	Reader
	// InTx runs fn in a transaction and commits when fn returns nil; otherwise, or when fn
	// panics, it rolls back and returns fn's error unchanged. When the database aborted
	// the transaction to break a deadlock or a serialization conflict (ErrAborted), it
	// runs fn again in a new transaction, a few times, so fn must keep nothing from an
	// attempt but what it sets anew. Do not call InTx again from inside fn: on SQLite
	// there is a single writer, and the inner call would wait for the outer one forever.
	InTx(ctx context.Context, fn func(tx Tx) error) error
	// Migrate brings the schema up to date. Open runs it; running it again is harmless.
	Migrate(ctx context.Context) error
	// Driver returns "sqlite" or "postgres".
	Driver() string
	Close() error
}

// Open opens the store described by cfg and migrates its schema.
func Open(ctx context.Context, cfg Config, log zerolog.Logger) (Store, error) {
	log = log.With().Str("component", "store").Str("driver", cfg.Driver).Logger()
	var (
		s   *sqlStore
		err error
	)
	switch cfg.Driver {
	case DriverSQLite:
		s, err = openSQLite(ctx, cfg, log)
	case DriverPostgres:
		s, err = openPostgres(ctx, cfg, log)
	default:
		return nil, fmt.Errorf("store: unknown driver %q (want %q or %q): %w", cfg.Driver, DriverSQLite, DriverPostgres, ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}
