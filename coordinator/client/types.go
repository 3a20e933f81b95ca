package client

import (
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// The API's JSON types are package api's, which the server encodes: the names below keep
// the client's API as it was, one definition per type. Times the server leaves out (or
// sends as null) stay zero; fields a newer server adds are ignored.
type (
	Health         = api.Health
	Org            = api.Org
	OrgList        = api.OrgList
	User           = api.User
	UserCreate     = api.UserCreate
	UserList       = api.UserList
	APITokenCreate = api.APITokenCreate
	APITokenIssued = api.APITokenIssued
	UserUpdate     = api.UserUpdate
	APIToken       = api.APIToken
	APITokenList   = api.APITokenList
	CustomRole     = api.CustomRole
	CustomRoleList = api.CustomRoleList
	CustomRoleSpec = api.CustomRoleCreate

	RecoveryCertificate     = api.RecoveryCertificate
	RecoveryCertificateList = api.RecoveryCertificateList
	EscrowedKey             = api.EscrowedKey
	EscrowedKeyList         = api.EscrowedKeyList
	EncryptionKey           = api.EncryptionKey
	EncryptionKeyList       = api.EncryptionKeyList
	RecoveryCreate          = api.RecoveryCreate
	RecoveryArchive         = api.RecoveryArchive
	RecoveryDelivery        = api.RecoveryDelivery
	Profile                 = api.Profile
	ProfileList             = api.ProfileList
	JobCreate               = api.JobCreate
	Job                     = api.Job
	JobDetail               = api.JobDetail
	JobApproval             = api.JobApproval
	JobEvent                = api.JobEvent
	JobStep                 = api.JobStep
	JobList                 = api.JobList
	Decision                = api.Decision
	RetryRequest            = api.Retry
	Agent                   = api.Agent
	AgentEnrolment          = api.AgentEnrol
	AgentBatch              = api.AgentBatch
	ErrorEntry              = api.ErrorEntry
	AgentList               = api.AgentList
	Token                   = api.Token
	TokenList               = api.TokenList
	Certificate             = api.Certificate
	CertificateList         = api.CertificateList
	CACertificate           = api.CACertificate
	TokenLife               = api.TokenLife
	TokenLifeEvent          = api.TokenLifeEvent
	TokenIssue              = api.TokenIssue
	CAChain                 = api.CAChain
	AuditEntry              = api.AuditEntry
	AuditPage               = api.AuditPage
	CheckpointList          = api.AuditCheckpointList
	CheckpointKey           = api.AuditCheckpointKey
	Document                = api.Document
	Register                = api.Register
	RegisterEntry           = api.RegisterEntry
)

// Page asks for one page of a list: at most Limit items (0: the server's default) after
// the position Cursor names (a previous page's NextCursor; "" for the first page).
type Page struct {
	Limit  int
	Cursor string
}

// UserFilter narrows a list of people.
type UserFilter struct {
	Organization string // organisation name
	Role         jobs.Role
	Search       string // text in the username, name or e-mail address, ignoring case
}

// JobFilter narrows a list of jobs; empty fields do not filter.
type JobFilter struct {
	State        jobs.State
	Organization string
	Holder       string // holder username
	Agent        string
	Kind         jobs.Kind
	// AwaitingMe keeps the jobs that wait for the caller's decision.
	AwaitingMe bool
}

// TokenFilter narrows a list of tokens.
type TokenFilter struct {
	Agent  string
	Holder string // username: tokens carrying one of the holder's certificates
	Model  string // text in the model or manufacturer, ignoring case
	Search string // text in the serial or label, ignoring case
}

// CertificateFilter narrows a list of certificates.
type CertificateFilter struct {
	Holder  string
	Agent   string
	Token   string // token serial
	Profile string
	Revoked *bool // nil: both
	// ExpiresBefore keeps certificates whose validity ends before it; zero: any.
	ExpiresBefore time.Time
}
