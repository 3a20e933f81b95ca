package httpapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

type profileOut struct {
	Name               string    `json:"name"`
	Description        string    `json:"description"`
	Version            int64     `json:"version"`
	Hash               string    `json:"hash"`
	ApprovalsRequired  int       `json:"approvals_required"`
	CAOperatorRequired bool      `json:"ca_operator_required"`
	Key                string    `json:"key"`
	Updated            time.Time `json:"updated"`
	UpdatedBy          string    `json:"updated_by"`
	YAML               string    `json:"yaml"`
}

func TestProfiles(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)

	l := ok[struct {
		Items []profileOut `json:"items"`
	}](t, e.as(t, "ap1", "GET", "/api/v1/profiles", nil), 200)
	if len(l.Items) != 3 {
		t.Fatalf("profiles %+v", l.Items)
	}
	byName := map[string]profileOut{}
	for _, p := range l.Items {
		byName[p.Name] = p
	}
	d := byName["dual"]
	if d.Version != 1 || d.ApprovalsRequired != 2 || !d.CAOperatorRequired || d.Key != "rsa-3072" || d.UpdatedBy != "admin" || len(d.Hash) != 64 {
		t.Fatalf("dual: %+v", d)
	}
	applied := e.auditSince(t, 0, audit.ActionProfileApplied)
	if len(applied) != 3 || applied[2].Target != "profile:dual" || !strings.Contains(string(applied[2].Details), d.Hash) {
		t.Fatalf("profile audit: %+v", applied)
	}

	// The same content again is no change: no new version, no audit entry.
	head := e.auditHead(t)
	again := ok[struct {
		Items []profileOut `json:"items"`
	}](t, e.as(t, "admin", "PUT", "/api/v1/profiles", "# same meaning, other layout\n"+profileDual), 200)
	if again.Items[0].Version != 1 || again.Items[0].Hash != d.Hash {
		t.Fatalf("re-applied: %+v", again.Items[0])
	}
	if n := len(e.auditSince(t, head, audit.ActionProfileApplied)); n != 0 {
		t.Fatalf("unchanged profile audited %d times", n)
	}

	// Two documents, one of them changed.
	two := strings.Replace(profileDual, "required: 2", "required: 3", 1) + "---\n" + profileOpen
	res := ok[struct {
		Items []profileOut `json:"items"`
	}](t, e.as(t, "admin", "PUT", "/api/v1/profiles", two), 200)
	if len(res.Items) != 2 || res.Items[0].Version != 2 || res.Items[0].ApprovalsRequired != 3 || res.Items[1].Version != 1 {
		t.Fatalf("applied %+v", res.Items)
	}
	one := ok[profileOut](t, e.as(t, "hd", "GET", "/api/v1/profiles/dual", nil), 200)
	if one.Version != 2 || !strings.Contains(one.YAML, "required: 3") {
		t.Fatalf("dual now %+v", one)
	}
	if n := len(e.auditSince(t, head, audit.ActionProfileApplied)); n != 1 {
		t.Fatalf("%d profile.applied entries for one change", n)
	}
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/profiles/nope", nil), 404, "not_found", "")
}

func TestProfilesRefused(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	before := ok[profileOut](t, e.as(t, "hd", "GET", "/api/v1/profiles/email-signing", nil), 200)
	head := e.auditHead(t)

	tests := []struct {
		name   string
		yaml   string
		status int
		code   string
		field  string
		msg    string
	}{
		{"unknown field", profileEmail + "colour: blue\n", 400, "invalid_profile", "colour", "colour"},
		{"wrong type deep down", strings.Replace(profileOpen, "min_length: 6", "min_length: six", 1), 400, "invalid_profile", "pin_policy.min_length", "six"},
		{"bad key size", strings.Replace(profileOpen, "{type: ec, curve: P-256}", "{type: rsa, size: 1000}", 1), 400, "invalid_profile", "key.size", "open-client"},
		{"unknown role", strings.Replace(profileEmail, "roles: [approver]", "roles: [boss]", 1), 400, "invalid_profile", "approval.roles[0]", "boss"},
		{"bad placeholder", strings.Replace(profileEmail, "{{.Name}}", "{{.Salary}}", 1), 400, "invalid_profile", "subject.common_name", "Salary"},
		{"not YAML", "name: [unclosed\n", 400, "invalid_profile", "", ""},
		{"empty document", "# nothing\n", 400, "invalid_profile", "", "no profile"},
		// The valid first document is not stored either: all or nothing.
		{"second document invalid", strings.Replace(profileEmail, "7d", "9d", 1) + "---\n" + strings.Replace(profileOpen, "validity: 30d", "validity: 30", 1), 400, "invalid_profile", "validity", "unit"},
		{"same name twice", profileOpen + "---\n" + profileOpen, 400, "invalid_profile", "name", "twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			er := wantErr(t, e.as(t, "admin", "PUT", "/api/v1/profiles", tc.yaml), tc.status, tc.code, "-")
			if tc.field != "" && er.Error.Field != tc.field {
				t.Errorf("field %q (%s), want %q", er.Error.Field, er.Error.Message, tc.field)
			}
			if !strings.Contains(er.Error.Message, tc.msg) {
				t.Errorf("message %q does not name %q", er.Error.Message, tc.msg)
			}
		})
	}
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/profiles", ""), 400, "bad_request", "")
	wantErr(t, e.as(t, "admin", "PUT", "/api/v1/profiles", strings.Repeat("#", 300<<10)), 413, "too_large", "")
	if h := e.auditHead(t); h != head {
		t.Fatalf("refused profiles changed the audit log (%d entries)", h-head)
	}
	after := ok[profileOut](t, e.as(t, "hd", "GET", "/api/v1/profiles/email-signing", nil), 200)
	if after != before {
		t.Fatalf("a refused document changed a stored profile:\n%+v\n%+v", before, after)
	}
	wantErr(t, e.as(t, "hd", "PUT", "/api/v1/profiles", profileOpen), 403, "forbidden", "")

	// A declared content type that is not YAML is refused.
	r := e.doCT(t, "PUT", "/api/v1/profiles", e.admin, "image/png", profileOpen)
	wantErr(t, r, 415, "unsupported_media_type", "Content-Type")
	ok[struct {
		Items []profileOut `json:"items"`
	}](t, e.doCT(t, "PUT", "/api/v1/profiles", e.admin, "application/yaml", profileOpen), 200)
}
