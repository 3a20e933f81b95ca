package brokeradmin

import (
	"errors"
	"fmt"
	"net/http"
)

var (
	// ErrUnauthorized: the management API refused the request with 401, because the
	// management user's credentials are wrong or because it lacks the administrator tag
	// (the APIError's Reason says which).
	ErrUnauthorized = errors.New("management API refused the credentials or the user's rights")
	// ErrNotFound: what the request named (a user, a vhost) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotAgentUser: the user exists but is not one an agent may have (it has tags,
	// so it is an operator's or a management user, or it is the client's own management
	// user); the client refuses to change or delete it.
	ErrNotAgentUser = errors.New("not an agent's broker user")
	// ErrClosed: the client was closed (Client.Close) before the agent was provisioned.
	ErrClosed = errors.New("broker management client closed")
)

// APIError is an answer of the management API other than 2xx.
type APIError struct {
	Method string
	Path   string // below the base, names escaped
	Status int
	// Code and Reason are RabbitMQ's "error" and "reason" fields, or the start of the
	// body when it is not RabbitMQ's JSON (a proxy's error page).
	Code   string
	Reason string
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	switch {
	case e.Code != "" && e.Reason != "":
		s += ": " + e.Code + ": " + e.Reason
	case e.Reason != "":
		s += ": " + e.Reason
	case e.Code != "":
		s += ": " + e.Code
	}
	return s
}

// Is makes errors.Is(err, ErrUnauthorized) and errors.Is(err, ErrNotFound) work.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	}
	return false
}

// AgentError is the failure of one agent of PutAgents; the joined error PutAgents
// returns unwraps to them.
type AgentError struct {
	AgentID string
	Err     error
}

func (e *AgentError) Error() string { return "agent " + e.AgentID + ": " + e.Err.Error() }
func (e *AgentError) Unwrap() error { return e.Err }
