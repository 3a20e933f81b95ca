// Package doctor checks what an unattended agent most often fails on in the field, each
// check with the fix for what it finds: the PKCS#11 modules load and list their slots;
// pcscd lets the service's user in (on Linux, polkit refuses access_pcsc to users without
// a login session, as a service's user is); the Windows smart-card service runs; the
// broker takes the agent's credentials and has its queue; the clock agrees with the
// coordinator's; the data directory is writable and private.
//
// Every check reads the machine through Env, so that tests can give it what fails.
package doctor

import (
	"context"
	"net/http"
	"time"
)

// Status is a check's verdict.
type Status string

// Verdicts.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	// Skip: the check could not run for want of a setting (it says which) or was
	// left out on the command line. It does not fail the report.
	Skip Status = "skip"
)

// Result is what one check found.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail says what was found, passing or not.
	Detail string `json:"detail"`
	// Fix says what to do about a failure.
	Fix string `json:"fix,omitempty"`
}

// Check is one check.
type Check struct {
	Name string
	Run  func(ctx context.Context) Result
}

// Env is what the checks read of the machine.
type Env struct {
	// OS is runtime.GOOS, or another for tests.
	OS string
	// Modules are the PKCS#11 modules the agent loads; Configured says whether they were
	// named in its configuration (else they are the defaults found on the machine).
	Modules    []string
	Configured bool
	// LoadModule loads a PKCS#11 module, lists its slots and unloads it; it returns a
	// one-line description of the slots.
	LoadModule func(ctx context.Context, path string) (string, error)
	// PCSCSocket is pcscd's socket; "" means DefaultPCSCSocket (or PCSCLITE_CSOCK_NAME).
	PCSCSocket string
	// SmartCardService reports whether the Windows smart-card service (SCardSvr) runs.
	SmartCardService func() (running bool, state string, err error)
	// Broker connects to the broker as the agent and checks its queue (agent.CheckBroker).
	Broker func(ctx context.Context) error
	// CoordinatorURL is the coordinator's API URL; its /healthz gives the time.
	CoordinatorURL string
	HTTPClient     *http.Client
	Now            func() time.Time
	// DataDir is the agent's data directory.
	DataDir string
}

// Timeout bounds each check: a broker or a coordinator that does not answer fails it.
const Timeout = 20 * time.Second

// Run runs the checks in order, except those named in skip, and returns their results.
func Run(ctx context.Context, checks []Check, skip []string) []Result {
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		if contains(skip, c.Name) {
			out = append(out, Result{Name: c.Name, Status: Skip, Detail: "left out (--skip " + c.Name + ")"})
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, Timeout)
		r := c.Run(cctx)
		cancel()
		r.Name = c.Name
		out = append(out, r)
	}
	return out
}

// Passed reports whether no check failed.
func Passed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return false
		}
	}
	return true
}

// Names lists the checks' names, for the command line's help and --skip.
func Names(checks []Check) []string {
	out := make([]string, len(checks))
	for i, c := range checks {
		out[i] = c.Name
	}
	return out
}

// Checks are the checks for env's OS, in the order they run.
func Checks(env Env) []Check {
	checks := []Check{{Name: "modules", Run: env.modules}}
	if env.OS == "windows" {
		checks = append(checks, Check{Name: "scardsvr", Run: env.smartCardService})
	} else {
		checks = append(checks, Check{Name: "pcscd", Run: env.pcscd})
	}
	return append(checks,
		Check{Name: "broker", Run: env.broker},
		Check{Name: "clock", Run: env.clock},
		Check{Name: "data_dir", Run: env.dataDir},
	)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func pass(detail string) Result         { return Result{Status: Pass, Detail: detail} }
func fail(detail, fix string) Result    { return Result{Status: Fail, Detail: detail, Fix: fix} }
func skipped(detail, fix string) Result { return Result{Status: Skip, Detail: detail, Fix: fix} }
