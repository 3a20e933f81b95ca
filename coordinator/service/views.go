package service

import (
	"encoding/json"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
)

// Actor is an authenticated caller, as Authenticate found them: every operation takes
// one and decides with it. Callers hold it without looking inside, so the API layer needs
// nothing of the store.
type Actor struct {
	user    store.User
	session string // the ID of the console session acting; "" for an API token
}

// ActorFor makes an actor of a stored user, for in-process callers that looked the user
// up themselves (tests, tools on the coordinator's own store).
func ActorFor(u store.User) Actor { return Actor{user: u} }

// Username is the actor's username, for logs.
func (a Actor) Username() string { return a.user.Username }

// ID is the actor's user ID, as audit entries name them.
func (a Actor) ID() string { return a.user.ID }

// Page asks for one page of a list: at most Limit items (0: the store's default) after
// the position Cursor names (a previous page's next cursor; "" for the first page).
type Page struct {
	Limit  int
	Cursor string
}

func (p Page) store() store.Page { return store.Page{Limit: p.Limit, Cursor: p.Cursor} }

// Organization is an organisation.
type Organization struct {
	ID      string
	Name    string
	Created time.Time
}

func organisationOf(o store.Organization) Organization {
	return Organization{ID: o.ID, Name: o.Name, Created: o.Created}
}

// Agent is an enrolled agent with its presence: what operators see of it, not its keys
// or broker identity.
type Agent struct {
	ID       string
	Hostname string
	OS       string
	Version  string
	Online   bool
	LastSeen time.Time // zero before its first message
	Enrolled time.Time
	Approved time.Time // zero until an administrator approves it
	// LastRefusal is the last message claiming to be the agent that was refused (zero At:
	// none), with the broker user that sent it.
	LastRefusal store.AgentRefusal
	// State is its place in the life cycle; StateReason and StateBy say why and who moved
	// it there (a username, or the enrolment key for a self-enrolled agent).
	State        store.AgentState
	StateReason  string
	StateBy      string
	StateAt      time.Time
	Organization string
	Tags         []string
	EnrolledWith string // the enrolment key or code it enrolled with; "" when an administrator enrolled it
}

func agentOf(a store.Agent) Agent {
	return Agent{ID: a.ID, Hostname: a.Hostname, OS: a.OS, Version: a.Version, Online: a.Online,
		LastSeen: a.LastSeen, Enrolled: a.Enrolled, Approved: a.Approved, LastRefusal: a.LastRefusal,
		State: a.State, StateReason: a.StateReason, StateBy: a.StateBy, StateAt: a.StateAt,
		Organization: a.OrganizationID, Tags: a.Tags, EnrolledWith: a.EnrolledWith}
}

// Token is a hardware token as an agent last reported it.
type Token struct {
	Serial       string
	AgentID      string // "" when unknown
	Label        string
	Manufacturer string
	Model        string
	URI          string          // PKCS#11 URI (RFC 7512) naming the token by what it reports
	Flags        json.RawMessage // as reported
	LastSeen     time.Time
	// State is where the token is in its life cycle (package tokenlife).
	State tokenlife.State
}

func tokenOf(t store.Token) Token {
	return Token{Serial: t.Serial, AgentID: t.AgentID, Label: t.Label, Manufacturer: t.Manufacturer, Model: t.Model,
		URI: tokenURI(t.Label, t.Manufacturer, t.Serial, t.Model), Flags: t.Flags, LastSeen: t.LastSeen}
}

// tokenURI is the PKCS#11 URI that selects a token by its CK_TOKEN_INFO fields; what is
// not known is left out, so a token known by its serial alone is pkcs11:serial=….
func tokenURI(label, manufacturer, serial, model string) string {
	u := uri.URI{Token: label, Manufacturer: manufacturer, Serial: serial, Model: model}
	return u.String()
}

// convert maps a slice of store rows to their views.
func convert[S, V any](in []S, f func(S) V) []V {
	out := make([]V, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

// AgentState is an agent's place in its life cycle (pending, active, disabled, removed).
type AgentState = store.AgentState

// EnrolmentKind tells one-off activation codes (code) from reusable enrolment keys (key).
type EnrolmentKind = store.EnrolmentKind
