package service

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// User is a stored user with the name of their organisation.
type User struct {
	store.User
	Organization string
}

// UserRequest describes a user to create.
type UserRequest struct {
	Username     string
	DisplayName  string
	Email        string
	UPN          string
	Organization string // organisation name; "" for none
	Attributes   map[string]string
	Roles        []jobs.Role
	// Language is the language of the user's notifications (fr, en); "" for the
	// coordinator's default.
	Language string
}

// Limits on user fields.
const (
	maxNameLen       = 128
	maxDisplayLen    = 256
	maxAttributes    = 64
	maxAttrKeyLen    = 64
	maxAttrValueLen  = 1024
	maxTokenNameLen  = 64
	defaultTokenName = "api"
)

var (
	usernameRE = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,128}$`)
	attrKeyRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*$`)
)

// checkText refuses text a name or a certificate field should not hold.
func checkText(field, v string, maxLen int) error {
	switch {
	case !utf8.ValidString(v):
		return badRequest(field, "is not valid UTF-8")
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return badRequest(field, "holds control characters")
	case utf8.RuneCountInString(v) > maxLen:
		return badRequest(field, "is %d characters long, at most %d", utf8.RuneCountInString(v), maxLen)
	}
	return nil
}

func (r UserRequest) validate() error {
	if r.Username == "" {
		return badRequest("username", "is required")
	}
	if !usernameRE.MatchString(r.Username) {
		return badRequest("username", "%q: use 1 to 128 letters, digits and . _ @ -", r.Username)
	}
	if err := checkText("display_name", r.DisplayName, maxDisplayLen); err != nil {
		return err
	}
	if r.Email != "" {
		if a, err := mail.ParseAddress(r.Email); err != nil || a.Address != r.Email || len(r.Email) > 254 {
			return badRequest("email", "%q is not a plain e-mail address (name@example.org)", r.Email)
		}
	}
	if r.UPN != "" {
		user, domain, ok := strings.Cut(r.UPN, "@")
		if !ok || user == "" || domain == "" || strings.Contains(domain, "@") || strings.ContainsFunc(r.UPN, unicode.IsSpace) || len(r.UPN) > 256 {
			return badRequest("upn", "%q is not a user principal name (user@domain)", r.UPN)
		}
	}
	if err := checkText("organization", r.Organization, maxNameLen); err != nil {
		return err
	}
	if len(r.Attributes) > maxAttributes {
		return badRequest("attributes", "%d attributes, at most %d", len(r.Attributes), maxAttributes)
	}
	for k, v := range r.Attributes {
		if len(k) > maxAttrKeyLen || !attrKeyRE.MatchString(k) {
			return badRequest("attributes", "key %q: start with a letter, then letters, digits and _ . - (at most %d)", k, maxAttrKeyLen)
		}
		if err := checkText("attributes."+k, v, maxAttrValueLen); err != nil {
			return err
		}
	}
	if err := checkLanguage(r.Language); err != nil {
		return err
	}
	return checkRoleNames(r.Roles)
}

// rolesExist refuses a role that is neither built-in nor a custom role that exists.
func (s *Service) rolesExist(ctx context.Context, field string, roles []jobs.Role) error {
	custom, err := s.st.GetCustomRoles(ctx, roles)
	if err != nil {
		return AsError(err)
	}
	for i, r := range roles {
		if r.Valid() || slices.ContainsFunc(custom, func(c store.CustomRole) bool { return c.Name == string(r) }) {
			continue
		}
		f := field
		if field == "roles" {
			f = fmt.Sprintf("roles[%d]", i)
		}
		return badRequest(f, "no built-in or custom role named %q (built-in: %v; custom roles: tokenfleetctl role list)", r, jobs.AllRoles())
	}
	return nil
}

// checkRoleNames refuses a role that is neither built-in nor a custom role's name.
func checkRoleNames(roles []jobs.Role) error {
	for i, role := range roles {
		if !role.WellFormed() {
			return badRequest(fmt.Sprintf("roles[%d]", i), "%q is neither a built-in role (%v) nor a custom role's name (%s)", role, jobs.AllRoles(), jobs.CustomRoleNameRule)
		}
	}
	return nil
}

// Whoami returns the caller. Everyone may ask.
func (s *Service) Whoami(ctx context.Context, by Actor) User {
	actor := by.user
	return User{User: actor, Organization: newNames(s.st).org(ctx, actor.OrganizationID)}
}

// CreateOrganization creates an organisation (admin).
func (s *Service) CreateOrganization(ctx context.Context, by Actor, name string) (Organization, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "create organisation", jobs.PermManageUsers, ""); err != nil {
		return Organization{}, err
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return Organization{}, badRequest("name", "is required")
	}
	if err := checkText("name", name, maxNameLen); err != nil {
		return Organization{}, err
	}
	var out store.Organization
	err := s.update(ctx, func(t *txn) error {
		o, err := t.CreateOrganization(ctx, store.Organization{Name: name, Created: t.now})
		if errors.Is(err, store.ErrConflict) {
			return newErr(CodeConflict, "name", "an organisation named %q exists", name)
		}
		if err != nil {
			return err
		}
		out = o
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionOrgCreated, Target: "org:" + o.ID,
			Details: audit.Details("name", o.Name)})
	})
	if err != nil {
		return Organization{}, err
	}
	return organisationOf(out), nil
}

// ListOrganizations lists organisations by name: all of them, or an approver's own.
func (s *Service) ListOrganizations(ctx context.Context, by Actor, page Page) ([]Organization, string, error) {
	actor := by.user
	p := page.store()
	sc, err := s.canRead(ctx, actor, resOrgs)
	if err != nil {
		return nil, "", err
	}
	if !sc.all {
		out := []Organization{}
		if p.Cursor != "" {
			return out, "", nil
		}
		for _, id := range sc.orgs {
			o, err := s.st.GetOrganization(ctx, id)
			if err != nil {
				return nil, "", AsError(err)
			}
			out = append(out, organisationOf(o))
		}
		return out, "", nil
	}
	orgs, next, err := s.st.ListOrganizations(ctx, p)
	if err != nil {
		return nil, "", pageErr(err)
	}
	return convert(orgs, organisationOf), next, nil
}

// CreateUser creates a person: a certificate holder, an operator, or both (admin).
func (s *Service) CreateUser(ctx context.Context, by Actor, r UserRequest) (User, error) {
	actor := by.user
	acc, err := s.authorize(ctx, actor, "create user", jobs.PermManageUsers, "")
	if err != nil {
		return User{}, err
	}
	r.Organization = strings.TrimSpace(r.Organization)
	if err := r.validate(); err != nil {
		return User{}, err
	}
	if err := s.rolesExist(ctx, "roles", r.Roles); err != nil {
		return User{}, err
	}
	if err := s.mayGrant(ctx, acc, "create user", nil, r.Roles); err != nil {
		return User{}, err
	}
	var out User
	err = s.update(ctx, func(t *txn) error {
		var orgID string
		if r.Organization != "" {
			o, err := t.GetOrganizationByName(ctx, r.Organization)
			if errors.Is(err, store.ErrNotFound) {
				return badRequest("organization", "no organisation named %q", r.Organization)
			}
			if err != nil {
				return err
			}
			orgID, r.Organization = o.ID, o.Name
		}
		u, err := t.CreateUser(ctx, store.User{Username: r.Username, DisplayName: r.DisplayName, Email: r.Email, UPN: r.UPN,
			OrganizationID: orgID, Attributes: r.Attributes, Roles: r.Roles, Created: t.now, Language: r.Language})
		if errors.Is(err, store.ErrConflict) {
			return newErr(CodeConflict, "username", "a user named %q exists", r.Username)
		}
		if errors.Is(err, store.ErrInvalid) {
			return badRequest("roles", "%s; create the custom role first (tokenfleetctl role create)", trimStore(err))
		}
		if err != nil {
			return err
		}
		out = User{User: u, Organization: r.Organization}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionUserCreated, Target: "user:" + u.ID,
			Details: audit.Details("username", u.Username, "organization", r.Organization, "roles", roleNames(u.Roles))})
	})
	return out, err
}

func roleNames(rs []jobs.Role) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

// UserQuery filters ListUsers.
type UserQuery struct {
	Organization string // name
	Role         jobs.Role
	// Search keeps people whose username, name or e-mail address contains it, ignoring
	// case.
	Search string
}

// ListUsers lists people by username: everyone, or an approver's organisation.
func (s *Service) ListUsers(ctx context.Context, by Actor, q UserQuery, page Page) ([]User, string, error) {
	actor := by.user
	p := page.store()
	sc, err := s.canRead(ctx, actor, resUsers)
	if err != nil {
		return nil, "", err
	}
	f := store.UserFilter{Role: q.Role, Search: q.Search}
	if q.Role != "" && !q.Role.WellFormed() {
		return nil, "", badRequest("role", "%q is neither a built-in role (%v) nor a custom role's name", q.Role, jobs.AllRoles())
	}
	if q.Role != "" {
		if err := s.rolesExist(ctx, "role", []jobs.Role{q.Role}); err != nil {
			return nil, "", err
		}
	}
	if q.Organization != "" {
		o, err := s.st.GetOrganizationByName(ctx, q.Organization)
		if errors.Is(err, store.ErrNotFound) {
			return nil, "", badRequest("organization", "no organisation named %q", q.Organization)
		}
		if err != nil {
			return nil, "", AsError(err)
		}
		f.OrganizationID = o.ID
	}
	if f.OrganizationID, err = s.narrowList(ctx, actor, sc, f.OrganizationID, "users"); err != nil {
		return nil, "", err
	}
	us, next, err := s.st.ListUsers(ctx, f, p)
	if err != nil {
		return nil, "", pageErr(err)
	}
	names := newNames(s.st)
	out := make([]User, len(us))
	for i, u := range us {
		out[i] = User{User: u, Organization: names.org(ctx, u.OrganizationID)}
	}
	return out, next, nil
}

// GetUser returns one person: anyone may read themselves.
func (s *Service) GetUser(ctx context.Context, by Actor, username string) (User, error) {
	actor := by.user
	if strings.EqualFold(username, actor.Username) {
		return s.Whoami(ctx, by), nil
	}
	sc, err := s.canRead(ctx, actor, resUsers)
	if err != nil {
		return User{}, err
	}
	u, err := s.st.GetUserByUsername(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		return User{}, newErr(CodeNotFound, "", "no user named %q", username)
	}
	if err != nil {
		return User{}, AsError(err)
	}
	if !sc.covers(u.OrganizationID) {
		return User{}, s.deny(ctx, actor, "read user", "", "user:"+u.ID,
			newErr(CodeOutOfScope, "", "%s reads the users of their own organisation only", actor.Username))
	}
	return User{User: u, Organization: newNames(s.st).org(ctx, u.OrganizationID)}, nil
}

// BootstrapUsername is the first administrator's username.
const BootstrapUsername = "admin"

// Bootstrap creates the first administrator and an API token for them when the store holds
// no user at all, and hands the token to keep inside the transaction: if keep fails,
// nothing is created. It reports whether it created the administrator.
func (s *Service) Bootstrap(ctx context.Context, keep func(token string) error) (bool, error) {
	created := false
	err := s.update(ctx, func(t *txn) error {
		created = false
		us, _, err := t.ListUsers(ctx, store.UserFilter{}, store.Page{Limit: 1})
		if err != nil || len(us) > 0 {
			return err
		}
		actor := systemActor("bootstrap")
		u, err := t.CreateUser(ctx, store.User{Username: BootstrapUsername, DisplayName: "Bootstrap administrator",
			Roles: []jobs.Role{jobs.RoleAdmin}, Created: t.now})
		if err != nil {
			// Another coordinator sharing the database bootstrapped first.
			return casLost(err)
		}
		tok, secret, err := t.CreateBootstrapAPIToken(ctx, u.ID)
		if err != nil {
			return err
		}
		if err := t.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionUserCreated, Target: "user:" + u.ID,
			Reason: "first start", Details: audit.Details("username", u.Username, "roles", roleNames(u.Roles))}); err != nil {
			return err
		}
		if err := t.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionTokenCreated, Target: "user:" + u.ID,
			Reason: "first start", Details: audit.Details("token_id", tok.ID, "name", tok.Name, "username", u.Username, "expires", "never (bootstrap)")}); err != nil {
			return err
		}
		if err := keep(secret); err != nil {
			return err
		}
		created = true
		return nil
	})
	return created, err
}

// pageErr maps a list error: a malformed cursor is the client's.
func pageErr(err error) error {
	if errors.Is(err, store.ErrInvalid) {
		return &Error{Code: CodeBadRequest, Field: "cursor", Msg: "malformed or foreign page cursor; start again without it", Err: err}
	}
	return AsError(err)
}
