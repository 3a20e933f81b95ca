package ctl_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestAgentAddFromFile: agent add --from enrols the agents of a CSV file against the real
// coordinator, 1,000 to a request; a bad file is refused naming its line and column
// before anything is sent, and a refused request names each refused line.
func TestAgentAddFromFile(t *testing.T) {
	// A broker, so that each enrolment declares its agents' queues as in production
	// rather than waiting for a broker that never comes.
	inst := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: testenv.NewBroker(t).URL})
	inst.EnrolAgent(t, "ws-01", "ws-01.acme.example")
	admin := map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": inst.AdminToken}
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	agents := func() map[string]client.Agent {
		c, err := client.New(inst.URL, inst.AdminToken)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]client.Agent{}
		for a, err := range c.AllAgents(context.Background(), 500) {
			if err != nil {
				t.Fatal(err)
			}
			out[a.ID] = a
		}
		return out
	}

	// Columns in any order, a spreadsheet's byte-order mark, comments, empty lines, an
	// empty broker_user.
	good := file("good.csv", "\ufeffHostname, ID ,broker_user\n"+
		"# the first floor\n"+
		"ws-10.acme.example,ws-10,\n"+
		"\n"+
		"ws-11.acme.example,ws-11,tf-ws-11\n"+
		"\"ws-12, the annex\",ws-12,\n")
	r := runCtl(t, admin, "", "agent", "add", "--from", good)
	if r.code != 0 || r.stderr != "" || r.stdout != "3 agents enrolled from "+good+"\n" {
		t.Fatalf("agent add --from: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	got := agents()
	if got["ws-12"].Hostname != "ws-12, the annex" || got["ws-10"].Hostname != "ws-10.acme.example" || !got["ws-11"].Approved {
		t.Errorf("agents after the file: %+v", got)
	}

	// Standard input, --json.
	r = runCtl(t, admin, "id,hostname\nws-20,ws-20.acme.example\n", "agent", "add", "--from", "-", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"id": "ws-20"`) || !strings.HasPrefix(strings.TrimSpace(r.stdout), "[") {
		t.Fatalf("from standard input: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// A file the command cannot read as agents: refused before anything is sent.
	before := len(agents())
	for _, tc := range []struct{ name, content, want string }{
		{"empty.csv", "", "empty.csv is empty; it needs a header line"},
		{"header.csv", "id,hostname\n# none yet\n", "header.csv holds a header but no agents"},
		{"organisation.csv", "id,hostname,organisation\nws-30,h,acme\n", `organisation.csv: line 1, column 3: unknown column "organisation"; the columns are id, hostname, broker_user`},
		{"twice.csv", "id,hostname,id\n", `twice.csv: line 1, column 3: column "id" named twice`},
		{"nohost.csv", "id,broker_user\nws-30,u\n", "nohost.csv: line 1: no hostname column"},
		{"emptyid.csv", "id,hostname\nws-30,h\n\n ,ws-31.acme.example\n", "emptyid.csv: line 4, column 1 (id): empty"},
		{"fields.csv", "id,hostname\nws-30,h\nws-31,h,extra\n", "fields.csv: line 3, column 1: wrong number of fields"},
		{"quote.csv", "id,hostname\nws-30,\"h\n", "quote.csv: line 2, column"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := file(tc.name, tc.content)
			r := runCtl(t, admin, "", "agent", "add", "--from", p)
			want := "tokenfleetctl: agent add: " + strings.Replace(tc.want, tc.name, p, 1)
			if r.code != ctl.ExitError || !strings.HasPrefix(r.stderr, want) || r.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and %q", r.code, r.stdout, r.stderr, want)
			}
		})
	}
	if after := len(agents()); after != before {
		t.Errorf("%d agents after refused files, %d before", after, before)
	}

	// Refused by the coordinator: each refused line named, with its field; nothing of
	// the request enrolled.
	bad := file("bad.csv", "id,hostname\nws-40,ws-40.acme.example\nws-01,elsewhere\nws-41,ws-41.acme.example\nWS-42,h\n")
	r = runCtl(t, admin, "", "agent", "add", "--from", bad)
	wantLines := []string{
		bad + ": line 3 (ws-01): id: ",
		bad + ": line 5 (WS-42): id: ",
		"tokenfleetctl: agent add: " + bad + ": 2 of the 4 agents of lines 2 to 5 refused (listed above), so none of them was enrolled; nothing was enrolled",
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if r.code != ctl.ExitError || len(lines) != len(wantLines) || r.stdout != "" {
		t.Fatalf("refused file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for i, w := range wantLines {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("stderr line %d = %q, want it to start with %q", i+1, lines[i], w)
		}
	}
	if !strings.Contains(lines[0], "ws-01.acme.example") {
		t.Errorf("a taken ID must name the host holding it: %q", lines[0])
	}
	if _, ok := agents()["ws-40"]; ok {
		t.Error("ws-40 enrolled from a refused request")
	}

	// More than one request's worth: the requests before a refused one stay enrolled, and
	// the message says from which line to go on.
	var b strings.Builder
	b.WriteString("id,hostname\n")
	for i := range client.MaxAgentBatch + 2 {
		id := fmt.Sprintf("pc-%04d", i)
		if i == client.MaxAgentBatch+1 {
			id = "ws-01" // taken
		}
		fmt.Fprintf(&b, "%s,%s.globex.example\n", id, id)
	}
	big := file("big.csv", b.String())
	r = runCtl(t, admin, "", "agent", "add", "--from", big)
	if r.code != ctl.ExitError || !strings.HasPrefix(r.stderr, big+": line 1003 (ws-01): id: ") ||
		!strings.Contains(r.stderr, "the 1000 agents before line 1002 are enrolled: fix the lines above and go on from line 1002") {
		t.Fatalf("a refused second request: exit %d, stderr %q", r.code, r.stderr)
	}
	got = agents()
	if _, ok := got["pc-0999"]; !ok {
		t.Error("the first request's agents are not enrolled")
	}
	if _, ok := got["pc-1000"]; ok {
		t.Error("an agent of the refused request was enrolled")
	}

	// The command line: --from takes no ID, no --hostname.
	for _, args := range [][]string{{"agent", "add", "ws-50", "--from", good}, {"agent", "add", "--from", good, "--hostname", "h"}} {
		if r := runCtl(t, admin, "", args...); r.code != ctl.ExitUsage || !strings.Contains(r.stderr, "--from takes the agents from the file") {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if r := runCtl(t, admin, "", "agent", "add", "--from", filepath.Join(dir, "missing.csv")); r.code != ctl.ExitError || !strings.Contains(r.stderr, "missing.csv") {
		t.Errorf("a missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}
