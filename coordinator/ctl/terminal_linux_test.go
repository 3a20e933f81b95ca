package ctl_test

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
)

// openPTY opens a pseudo-terminal: the side a person types into and the side a program
// reads as its terminal.
func openPTY(t *testing.T) (typist, term *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("a pseudo-terminal is needed: %v", err)
	}
	t.Cleanup(func() { _ = master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slave.Close() })
	return master, slave
}

// TestApproveAsksOnARealTerminal: with standard input a terminal, approve asks and takes
// the answer typed there; with /dev/null it asks nothing, as for a script.
func TestApproveAsksOnARealTerminal(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/jobs/j1", 200, reviewedJob())
	api.routes["POST /api/v1/jobs/j1/approve"] = func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, client.JobDetail{Job: client.Job{ID: "j1", State: "approved", Approvals: "1/1"}})
	}
	typist, term := openPTY(t)
	if _, err := typist.WriteString("n\n"); err != nil {
		t.Fatal(err)
	}
	r := runWith(api.env(), ctl.Env{Stdin: term}, "approve", "j1")
	if r.code != 1 || !strings.Contains(r.stderr, "Approve job j1? [y/N] ") || !strings.Contains(r.stderr, "not approved") {
		t.Errorf("answered n on a terminal: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := typist.WriteString("yes\n"); err != nil {
		t.Fatal(err)
	}
	r = runWith(api.env(), ctl.Env{Stdin: term}, "approve", "j1")
	if r.code != 0 || r.stdout != "job j1 approved: state approved, approvals 1/1\n" || !strings.Contains(r.stderr, "Binding hash") {
		t.Errorf("answered yes on a terminal: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = devNull.Close() }()
	r = runWith(api.env(), ctl.Env{Stdin: devNull}, "approve", "j1")
	if r.code != 0 || strings.Contains(r.stderr, "[y/N]") {
		t.Errorf("standard input /dev/null: exit %d, stderr %q", r.code, r.stderr)
	}
}
