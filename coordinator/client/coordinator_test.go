package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// must takes a call's results and gives v, failing the test on err:
// must(c.WhoAmI(ctx))(t).
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// wantCode fails unless err is an API error with code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Errorf("err = %v, want API error %s", err, code)
	}
}

// exampleProfile reads a profile of the repository's examples.
func exampleProfile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "profiles", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgainstCoordinator runs every endpoint of the client against the real coordinator,
// so the client's types and the server's JSON cannot drift apart unnoticed.
func TestAgainstCoordinator(t *testing.T) {
	ctx := context.Background()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	inst.EnrolAgent(t, "ws-01", "ws-01.acme.example")
	inst.EnrolAgent(t, "ws-02", "ws-02.acme.example")
	admin := must(client.New(inst.URL, inst.AdminToken))(t)

	h := must(admin.Health(ctx))(t)
	if h.Status != "ok" {
		t.Errorf("health %+v", h)
	}
	me := must(admin.WhoAmI(ctx))(t)
	if !slices.Contains(me.Roles, jobs.RoleAdmin) || me.Created.IsZero() {
		t.Errorf("whoami %+v", me)
	}
	anon := must(client.New(inst.URL, "tf_not_a_token"))(t)
	_, err := anon.WhoAmI(ctx)
	wantCode(t, err, "unauthenticated")

	// Organizations, walked in pages of two.
	for _, n := range []string{"acme", "globex", "initech", "umbrella", "hooli"} {
		o := must(admin.CreateOrg(ctx, n))(t)
		if o.Name != n || o.ID == "" || o.Created.IsZero() {
			t.Errorf("created %+v", o)
		}
	}
	_, err = admin.CreateOrg(ctx, "acme")
	wantCode(t, err, "conflict")
	orgs := must(client.Collect(admin.AllOrgs(ctx, 2)))(t)
	if len(orgs) != 5 {
		t.Errorf("%d organisations over pages of 2, want 5", len(orgs))
	}
	first := must(admin.ListOrgs(ctx, client.Page{Limit: 2}))(t)
	if len(first.Items) != 2 || first.NextCursor == "" {
		t.Errorf("first page %+v", first)
	}

	// People and tokens.
	op := must(admin.CreateUser(ctx, client.UserCreate{Username: "op1", DisplayName: "Olga", Organization: "acme",
		Roles: []jobs.Role{jobs.RoleHelpdesk}}))(t)
	must(admin.CreateUser(ctx, client.UserCreate{Username: "appr1", Organization: "acme", Roles: []jobs.Role{jobs.RoleApprover}}))(t)
	must(admin.CreateUser(ctx, client.UserCreate{Username: "appr2", Organization: "globex", Roles: []jobs.Role{jobs.RoleApprover}}))(t)
	alice := must(admin.CreateUser(ctx, client.UserCreate{Username: "alice", DisplayName: "Alice Holder", Email: "alice@acme.example",
		UPN: "alice@acme.example", Organization: "acme", Attributes: map[string]string{"employee_id": "42"}}))(t)
	if alice.Organization != "acme" || alice.Attributes["employee_id"] != "42" || alice.UPN != "alice@acme.example" {
		t.Errorf("created %+v", alice)
	}
	_, err = admin.CreateUser(ctx, client.UserCreate{Username: "bad name!"})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Code != "bad_request" || apiErr.Field != "username" || apiErr.Status != 400 {
		t.Errorf("a bad username gave %v", err)
	}
	if got := must(admin.GetUser(ctx, "op1"))(t); got.ID != op.ID || got.DisplayName != "Olga" {
		t.Errorf("get user %+v", got)
	}
	_, err = admin.GetUser(ctx, "nobody")
	wantCode(t, err, "not_found")
	approvers := must(client.Collect(admin.AllUsers(ctx, client.UserFilter{Role: jobs.RoleApprover}, 0)))(t)
	if len(approvers) != 2 {
		t.Errorf("%d approvers, want 2", len(approvers))
	}
	acme := must(client.Collect(admin.AllUsers(ctx, client.UserFilter{Organization: "acme"}, 1)))(t)
	if len(acme) != 3 {
		t.Errorf("%d people in acme, want 3", len(acme))
	}
	token := func(username string) *client.Client {
		issued := must(admin.CreateAPIToken(ctx, username, client.APITokenCreate{Name: "test", ExpiresIn: "90d"}))(t)
		if issued.Token == "" || issued.Username != username || issued.Expires.IsZero() {
			t.Fatalf("issued %+v", issued)
		}
		return must(client.New(inst.URL, issued.Token))(t)
	}
	opc, appr1, appr2 := token("op1"), token("appr1"), token("appr2")
	if who := must(opc.WhoAmI(ctx))(t); who.Username != "op1" {
		t.Errorf("op1's token belongs to %s", who.Username)
	}

	// Console passwords: anyone their own, manage_users anyone's.
	if err := admin.SetPassword(ctx, "alice", "alice's console passphrase"); err != nil {
		t.Errorf("admin sets alice's password: %v", err)
	}
	if err := opc.SetPassword(ctx, "op1", "op1's own console passphrase"); err != nil {
		t.Errorf("op1 sets their own password: %v", err)
	}
	wantCode(t, opc.SetPassword(ctx, "alice", "not op1's to set at all"), "forbidden")
	if n, err := admin.UnlinkOIDC(ctx, "alice", "no identity provider yet"); err != nil || n != 0 {
		t.Errorf("unlink OIDC: %d, %v", n, err)
	}
	_, err = opc.UnlinkOIDC(ctx, "alice", "not op1's to do")
	wantCode(t, err, "forbidden")
	err = admin.SetPassword(ctx, "alice", "short")
	if !errors.As(err, &apiErr) || apiErr.Code != "bad_request" || apiErr.Field != "password" || apiErr.Status != 400 {
		t.Errorf("a short password gave %v", err)
	}

	// Profiles.
	doc := exampleProfile(t, "smartcard-logon")
	applied := must(admin.ApplyProfiles(ctx, doc))(t)
	if len(applied.Items) != 1 || applied.Items[0].Name != "smartcard-logon" || applied.Items[0].Version != 1 ||
		applied.Items[0].ApprovalsRequired != 1 || applied.Items[0].Hash == "" {
		t.Errorf("applied %+v", applied)
	}
	_, err = admin.ApplyProfiles(ctx, []byte(strings.Replace(string(doc), "required: 1", "required: 99", 1)))
	if !errors.As(err, &apiErr) || apiErr.Code != "invalid_profile" || !strings.Contains(apiErr.Error(), "approval.required") {
		t.Errorf("an invalid profile gave %v", err)
	}
	_, err = opc.ApplyProfiles(ctx, doc)
	wantCode(t, err, "forbidden")
	if ps := must(opc.ListProfiles(ctx))(t); len(ps.Items) != 1 {
		t.Errorf("profiles %+v", ps)
	}
	if p := must(opc.GetProfile(ctx, "smartcard-logon"))(t); p.YAML != string(doc) {
		t.Errorf("the stored profile text differs from the file:\n%s", p.YAML)
	}

	// Jobs and the approval gate.
	j := must(opc.CreateJob(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "smartcard-logon"}))(t)
	if j.State != jobs.StatePendingApproval || j.Requester != "op1" || j.Organization != "acme" || j.Approvals != "0/1" || j.Deadline.IsZero() {
		t.Errorf("created %+v", j)
	}
	_, err = opc.CreateJob(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-99", Profile: "smartcard-logon"})
	if !errors.As(err, &apiErr) || apiErr.Field != "agent" {
		t.Errorf("a job for an unknown agent gave %v", err)
	}
	_, err = opc.Approve(ctx, j.ID, "")
	wantCode(t, err, "self_approval")
	_, err = appr2.Approve(ctx, j.ID, "")
	wantCode(t, err, "out_of_scope")
	d := must(appr1.Approve(ctx, j.ID, "checked"))(t)
	if d.State != jobs.StateApproved || len(d.ApprovalList) != 1 || d.ApprovalList[0].Approver != "appr1" ||
		d.ApprovalList[0].Decision != jobs.VerdictApprove || len(d.Timeline) != 2 {
		t.Errorf("approved %+v", d)
	}
	if got := must(opc.GetJob(ctx, j.ID))(t); got.ID != j.ID || got.State != jobs.StateApproved {
		t.Errorf("get job %+v", got)
	}
	_, err = opc.GetJob(ctx, "no-such-job")
	wantCode(t, err, "not_found")

	j2 := must(opc.CreateJob(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-02", Profile: "smartcard-logon"}))(t)
	_, err = appr1.Reject(ctx, j2.ID, "")
	wantCode(t, err, "reason_required")
	if d := must(appr1.Reject(ctx, j2.ID, "no"))(t); d.State != jobs.StateRejected {
		t.Errorf("rejected %+v", d)
	}
	j3 := must(opc.CreateJob(ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-02", Profile: "smartcard-logon"}))(t)
	if d := must(opc.Cancel(ctx, j3.ID, ""))(t); d.State != jobs.StateCancelled {
		t.Errorf("cancelled %+v", d)
	}
	_, err = opc.Cancel(ctx, j3.ID, "")
	wantCode(t, err, "not_cancellable")

	all := must(client.Collect(opc.AllJobs(ctx, client.JobFilter{}, 1)))(t)
	if ids := []string{all[0].ID, all[1].ID, all[2].ID}; len(all) != 3 || !slices.Equal(ids, []string{j3.ID, j2.ID, j.ID}) {
		t.Errorf("jobs newest first over pages of 1: %v", ids)
	}
	for _, tt := range []struct {
		f    client.JobFilter
		want []string
	}{
		{client.JobFilter{State: jobs.StateRejected}, []string{j2.ID}},
		{client.JobFilter{Agent: "ws-01"}, []string{j.ID}},
		{client.JobFilter{Holder: "alice", Kind: jobs.KindIssue, Organization: "acme"}, []string{j3.ID, j2.ID, j.ID}},
		{client.JobFilter{State: jobs.StateSucceeded}, nil},
	} {
		l := must(opc.ListJobs(ctx, tt.f, client.Page{}))(t)
		var ids []string
		for _, x := range l.Items {
			ids = append(ids, x.ID)
		}
		if !slices.Equal(ids, tt.want) {
			t.Errorf("jobs %+v: %v, want %v", tt.f, ids, tt.want)
		}
	}

	// The fleet.
	agents := must(client.Collect(admin.AllAgents(ctx, 1)))(t)
	if len(agents) != 2 || agents[0].Hostname == "" || agents[0].Enrolled.IsZero() {
		t.Errorf("agents %+v", agents)
	}
	if toks := must(admin.ListTokens(ctx, client.TokenFilter{Agent: "ws-01"}, client.Page{}))(t); len(toks.Items) != 0 {
		t.Errorf("tokens %+v", toks)
	}
	if certs := must(admin.ListCertificates(ctx, client.CertificateFilter{Holder: "alice"}, client.Page{}))(t); len(certs.Items) != 0 {
		t.Errorf("certificates %+v", certs)
	}

	// The audit log, verified here, over pages of every size down to one entry.
	_, err = opc.ListAudit(ctx, 0, 0)
	wantCode(t, err, "forbidden")
	page := must(admin.ListAudit(ctx, 0, 3))(t)
	if len(page.Items) != 3 || page.NextAfterSeq != 3 || page.Items[0].Seq != 1 || page.Items[0].PrevHash != audit.GenesisHash {
		t.Errorf("first audit page %+v", page)
	}
	for _, size := range []int{0, 1, 7, 5000} {
		res, err := admin.VerifyAudit(ctx, size)
		if err != nil {
			t.Fatalf("page size %d: %v", size, err)
		}
		if res.Entries < 15 || res.Head.Seq != res.Entries {
			t.Errorf("page size %d: %+v", size, res)
		}
	}
	entries := must(client.Collect(admin.AuditEntries(ctx, 0, 0)))(t)
	var actions []string
	for _, e := range entries {
		actions = append(actions, e.Action)
		if got := audit.ComputeHash(e.Entry()); got != e.Hash {
			t.Errorf("entry %d (%s) hashes to %s, the log says %s", e.Seq, e.Action, got, e.Hash)
		}
	}
	for _, want := range []string{audit.ActionOrgCreated, audit.ActionUserCreated, audit.ActionTokenCreated, audit.ActionProfileApplied,
		audit.ActionJobCreated, audit.ActionJobApproved, audit.ActionJobRejected, audit.ActionJobCancelled} {
		if !slices.Contains(actions, want) {
			t.Errorf("no %s entry among %v", want, actions)
		}
	}
	later := must(client.Collect(admin.AuditEntries(ctx, entries[len(entries)-3].Seq, 0)))(t)
	if len(later) < 2 || later[0].Seq != entries[len(entries)-2].Seq {
		t.Errorf("entries after seq %d: %d, want them to start at seq %d", entries[len(entries)-3].Seq, len(later), entries[len(entries)-2].Seq)
	}
}
