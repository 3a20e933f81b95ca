package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/cli"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

type doctorReport struct {
	Passed bool `json:"passed"`
	Checks []struct {
		Name, Status, Detail, Fix string
	} `json:"checks"`
}

// doctor exits 0 only when every check it ran passed, 1 when one failed (with the failure
// and its fix in the report), 2 for a check name it does not have.
func TestDoctor(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	id := testenv.UniqueUser("ws-")
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"doctor", "--json", "--id", id, "--broker", b.URL, "--data", dir, "--no-usb", "--skip", "pcscd", "--skip", "clock"}

	// Not enrolled yet: the broker check fails, saying how to enrol.
	stdout, stderr, code := run(t, append(args, "--module", testenv.SoftHSMModule)...)
	var rep doctorReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s\n%s", err, stdout, stderr)
	}
	if code != cli.ExitError || rep.Passed {
		t.Fatalf("not enrolled: exit %d, report %+v", code, rep)
	}
	statuses := map[string]string{}
	for _, c := range rep.Checks {
		statuses[c.Name] = c.Status
		if c.Name == "broker" && !strings.Contains(c.Fix, "tokenfleetctl agent add "+id) {
			t.Errorf("broker check: %+v", c)
		}
	}
	if want := map[string]string{"modules": "pass", "pcscd": "skip", "broker": "fail", "clock": "skip", "data_dir": "pass"}; len(statuses) != len(want) {
		t.Errorf("checks %v, want %v", statuses, want)
	} else {
		for k, v := range want {
			if statuses[k] != v {
				t.Errorf("check %s: %s, want %s", k, statuses[k], v)
			}
		}
	}

	c, err := amqp.Open(context.Background(), amqp.Config{URL: b.URL, Topology: amqp.DeclareShared})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Declare(ctx, func(ch amqp.Declarer) error { return amqp.DeclareAgent(ch, id) }); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, code := run(t, append(args, "--module", testenv.SoftHSMModule)...); code != cli.ExitOK || !strings.Contains(stdout, `"passed": true`) {
		t.Errorf("enrolled: exit %d\n%s\n%s", code, stdout, stderr)
	}

	// As text: the failure and its fix under it.
	text := []string{"doctor", "--id", id, "--broker", b.URL, "--data", dir, "--no-usb", "--skip", "pcscd", "--skip", "clock", "--module", filepath.Join(dir, "nope.so")}
	stdout, _, code = run(t, text...)
	if code != cli.ExitError || !strings.Contains(stdout, "FAIL  modules   "+filepath.Join(dir, "nope.so")+": ") ||
		!strings.Contains(stdout, "\n                fix: install the module") || !strings.HasSuffix(stdout, "some checks failed\n") {
		t.Errorf("exit %d, output:\n%s", code, stdout)
	}

	_, stderr, code = run(t, "doctor", "--skip", "pcsc", "--data", dir)
	if code != cli.ExitUsage || !strings.Contains(stderr, `--skip "pcsc": no such check here (checks: modules, `) {
		t.Errorf("unknown check: exit %d, %s", code, stderr)
	}
}
