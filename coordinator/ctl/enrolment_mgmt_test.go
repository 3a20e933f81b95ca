package ctl_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestAgentLifeCycleWithManagement: with broker management, agents enrolled with a key
// held for approval are listed as pending, and each life-cycle command makes or deletes
// the agent's own broker user, on the real broker.
func TestAgentLifeCycleWithManagement(t *testing.T) {
	t.Parallel()
	broker := testenv.NewBroker(t)
	inst := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: broker.URL, AgentUsers: "per_agent", Management: true})
	admin := ctlRun{t, map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": inst.AdminToken}}

	out, _ := admin.ok("enrolment-key", "create", "--kind", "key", "--max-uses", "2", "--tag", "site:paris", "--json")
	var created struct{ Items []client.EnrolmentKey }
	if err := json.Unmarshal([]byte(out), &created); err != nil || len(created.Items) != 1 {
		t.Fatalf("create --json: %v\n%s", err, out)
	}
	secret := created.Items[0].Secret
	first, second := testenv.UniqueUser("ws-"), testenv.UniqueUser("ws-")
	for _, id := range []string{first, second} {
		removeBrokerUserAtEnd(t, "agent-"+id)
		if state := selfEnrol(t, inst.URL, secret, id); state != client.AgentPending {
			t.Fatalf("agent %s enrolled %s, want pending", id, state)
		}
	}

	out, _ = admin.ok("agents", "--pending")
	for _, id := range []string{first, second} {
		if !regexp.MustCompile(`(?m)^` + id + ` +` + id + `\.acme\.example +linux +1\.2\.3 +pending +offline +- +site:paris +`).MatchString(out) {
			t.Errorf("agents --pending does not show %s:\n%s", id, out)
		}
	}
	if out, _ := admin.ok("enrolment-key", "list"); !strings.Contains(out, " 2/2 ") || !strings.HasSuffix(out, " used up\n") {
		t.Errorf("enrolment-key list after two enrolments:\n%s", out)
	}

	steps := []struct {
		args []string
		want string
		user bool // the agent's broker user exists afterwards
	}{
		{[]string{"agent", "approve", first, "--reason", "known laptop"}, "agent " + first + " approved: state active\n", true},
		{[]string{"agent", "rotate-credentials", first}, "agent " + first + ": broker credentials rotated; the agent fetches them when the broker refuses its old password\n", true},
		{[]string{"agent", "disable", first, "--reason", "laptop stolen"}, "agent " + first + " disabled: state disabled\n", false},
		{[]string{"agent", "enable", first, "--reason", "found again"}, "agent " + first + " enabled: state active\n", true},
		{[]string{"agent", "remove", first, "--reason", "decommissioned"}, "agent " + first + " removed: state removed\n", false},
		{[]string{"agent", "reject", second, "--reason", "unknown machine"}, "agent " + second + " rejected: state removed\n", false},
	}
	for _, s := range steps {
		if out, _ := admin.ok(s.args...); out != s.want {
			t.Errorf("%v printed %q, want %q", s.args, out, s.want)
		}
		if got := brokerUserExists(t, "agent-"+s.args[2]); got != s.user {
			t.Errorf("after %v the broker user exists: %v, want %v", s.args, got, s.user)
		}
	}
	if out, _ := admin.ok("agents", "--state", "removed"); strings.Count(out, " removed ") != 2 {
		t.Errorf("agents --state removed:\n%s", out)
	}
}

// selfEnrol enrols an agent with a code or key as tokenfleet-agent enrol does, from this
// host, and returns its state.
func selfEnrol(t *testing.T, base, code, id string) string {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(api.Enrol{Code: code, AgentID: id, Hostname: id + ".acme.example", OS: "linux", Version: "1.2.3", SealKey: der})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/api/v1/enrol", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var ans api.Enrolled
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("enrol %s: HTTP %d: %v", id, resp.StatusCode, err)
	}
	return ans.State
}

// brokerUserExists asks the broker's management API whether it has user.
func brokerUserExists(t *testing.T, user string) bool {
	t.Helper()
	status := mgmtCall(t, http.MethodGet, user)
	if status != http.StatusOK && status != http.StatusNotFound {
		t.Fatalf("management API: GET user %s: HTTP %d", user, status)
	}
	return status == http.StatusOK
}

// removeBrokerUserAtEnd deletes a broker user the coordinator made, whatever the test
// left: broker users belong to the whole broker.
func removeBrokerUserAtEnd(t *testing.T, user string) {
	t.Cleanup(func() {
		if status := mgmtCall(t, http.MethodDelete, user); status != http.StatusNoContent && status != http.StatusNotFound {
			t.Errorf("management API: DELETE user %s: HTTP %d", user, status)
		}
	})
}

func mgmtCall(t *testing.T, method, user string) int {
	req, err := http.NewRequestWithContext(context.Background(), method, testenv.ManagementURL+"/users/"+url.PathEscape(user), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("management API: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
