package service

import (
	"context"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// names turns user and organisation IDs into the names the API shows, remembering what it
// looked up for the length of one request.
type names struct {
	r     store.Reader
	users map[string]string
	orgs  map[string]string
}

func newNames(r store.Reader) *names {
	return &names{r: r, users: map[string]string{}, orgs: map[string]string{}}
}

// user returns the username of a user ID. Actors that are not users ("system:expiry",
// "agent:ws-1") and IDs that no longer resolve are returned as they are.
func (n *names) user(ctx context.Context, id string) string {
	if id == "" || strings.Contains(id, ":") {
		return id
	}
	if v, ok := n.users[id]; ok {
		return v
	}
	v := id
	if u, err := n.r.GetUser(ctx, id); err == nil {
		v = u.Username
	}
	n.users[id] = v
	return v
}

// org returns the name of an organisation ID ("" for none).
func (n *names) org(ctx context.Context, id string) string {
	if id == "" {
		return ""
	}
	if v, ok := n.orgs[id]; ok {
		return v
	}
	v := id
	if o, err := n.r.GetOrganization(ctx, id); err == nil {
		v = o.Name
	}
	n.orgs[id] = v
	return v
}
