package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const modulePath = "github.com/tokenfleet/tokenfleet"

// A rule forbids the packages matching from to import those matching deny. Patterns are
// module-relative; "x/..." matches x and everything below it. Rules hold for the code that
// ships, not for tests: a test may set up what its package may not touch.
type rule struct {
	from string
	deny []string
	// direct checks only the packages from imports itself; otherwise everything it
	// depends on, transitively, counts.
	direct bool
	// stdOnly additionally refuses anything from outside the module but the standard library.
	stdOnly bool
	// allow exempts packages matching these patterns from deny.
	allow []string
	why   string
}

// notProject lists every top-level part of the module but the ones in allow, as deny
// patterns.
func notProject(allow ...string) []string {
	var out []string
	for _, top := range []string{"agent/...", "coordinator/...", "drivers/...", "e2e/...", "internal/...", "protocol/...", "systemd/...", "fleetsim/..."} {
		ok := true
		for _, a := range allow {
			if a == top {
				ok = false
			}
		}
		if ok {
			out = append(out, top)
		}
	}
	return out
}

var rules = []rule{
	{from: "protocol", deny: notProject(), stdOnly: true,
		why: "the wire types are read by both ends and by tools outside the project: a leaf of the standard library only"},
	{from: "protocol/seal", deny: append(notProject("protocol/..."), "protocol/amqp/..."), stdOnly: true,
		why: "sealing is shared by both ends: the standard library and protocol only"},
	{from: "protocol/...", deny: notProject("protocol/..."),
		why: "protocol and its transport are shared by agent and coordinator and import neither, nor anything else of the project"},
	{from: "drivers/...", deny: []string{"protocol/amqp/...", "agent/...", "coordinator/..."},
		why: "token access knows nothing of the transport or of who drives it"},
	{from: "agent/...", deny: []string{"coordinator/..."},
		why: "the agent and the coordinator meet on the wire (protocol), never in code"},
	{from: "coordinator/...", deny: []string{"agent/..."},
		why: "the agent and the coordinator meet on the wire (protocol), never in code"},
	{from: "agent/...", deny: []string{"fleetsim/..."},
		why: "the agent does not know it is simulated: the simulator drives it through its seams"},
	{from: "coordinator/...", deny: []string{"fleetsim/..."},
		why: "the coordinator does not know its agents are simulated"},
	{from: "fleetsim/...", deny: []string{"coordinator/..."}, allow: []string{"coordinator/client", "coordinator/api"}, direct: true,
		why: "the simulator meets the coordinator as a deployment does, on the wire and through its API (client, api), never in its code"},
	{from: "coordinator/httpapi/...", deny: []string{"coordinator/store/..."}, direct: true,
		why: "the HTTP API goes through the service, which owns the rules; the store's types stay behind it"},
}

func match(pattern, pkg string) bool {
	pattern = modulePath + "/" + pattern
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

type pkgInfo struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Deps       []string
	Module     *struct{ Path string }
}

// list returns every package the module builds for goos, with all it depends on.
func list(t *testing.T, goos string) map[string]*pkgInfo {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), goTool, "list", "-deps", "-json=ImportPath,Standard,Imports,Deps,Module", modulePath+"/...")
	cmd.Env = append(os.Environ(), "GOOS="+goos)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list (GOOS=%s): %v\n%s", goos, err, stderr.String())
	}
	pkgs := map[string]*pkgInfo{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkgInfo
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[p.ImportPath] = &p
	}
	return pkgs
}

// TestLayering checks every rule for the host system and for Windows, whose agent builds
// files of its own.
func TestLayering(t *testing.T) {
	systems := []string{runtime.GOOS}
	if runtime.GOOS != "windows" {
		systems = append(systems, "windows")
	}
	for _, goos := range systems {
		t.Run(goos, func(t *testing.T) {
			pkgs := list(t, goos)
			for _, r := range rules {
				problems, checked := violations(r, pkgs)
				for _, p := range problems {
					t.Error(p)
				}
				// A rule whose packages were renamed away would pass forever: say so instead.
				if checked == 0 {
					t.Errorf("the rule for %s matches no package of the module; update it", r.from)
				}
			}
		})
	}
}

// violations returns what breaks r in pkgs, and how many packages r applies to.
func violations(r rule, pkgs map[string]*pkgInfo) (problems []string, checked int) {
	for _, p := range pkgs {
		if p.Module == nil || p.Module.Path != modulePath || !match(r.from, p.ImportPath) {
			continue
		}
		checked++
		deps := p.Deps
		if r.direct {
			deps = p.Imports
		}
		for _, d := range deps {
			denied := false
			for _, deny := range r.deny {
				denied = denied || match(deny, d)
			}
			for _, allow := range r.allow {
				denied = denied && !match(allow, d)
			}
			if dp := pkgs[d]; r.stdOnly && dp != nil && !dp.Standard && !strings.HasPrefix(d, modulePath+"/") {
				denied = true
			}
			if denied {
				problems = append(problems, p.ImportPath+" imports "+d+": "+r.why)
			}
		}
	}
	slices.Sort(problems)
	return problems, checked
}

// TestViolations checks the checker on a made-up module: a rule that cannot fail is no rule.
func TestViolations(t *testing.T) {
	mod := &struct{ Path string }{modulePath}
	p := func(path string, imports, deps []string) *pkgInfo {
		for i := range imports {
			imports[i] = modulePath + "/" + imports[i]
		}
		for i := range deps {
			if !strings.Contains(deps[i], ".") {
				deps[i] = modulePath + "/" + deps[i]
			}
		}
		return &pkgInfo{ImportPath: modulePath + "/" + path, Imports: imports, Deps: deps, Module: mod}
	}
	pkgs := map[string]*pkgInfo{}
	for _, q := range []*pkgInfo{
		p("web", []string{"service"}, []string{"service", "store"}),
		p("service", []string{"store"}, []string{"store"}),
		p("store", nil, nil),
		p("leaf", nil, []string{"example.com/dep"}),
		{ImportPath: "example.com/dep"},
	} {
		pkgs[q.ImportPath] = q
	}
	tests := []struct {
		r    rule
		want int
	}{
		{rule{from: "web/...", deny: []string{"store/..."}}, 1},               // through service
		{rule{from: "web/...", deny: []string{"store/..."}, direct: true}, 0}, // not itself
		{rule{from: "service", deny: []string{"store/..."}, direct: true}, 1},
		{rule{from: "leaf", stdOnly: true}, 1},
		{rule{from: "store", stdOnly: true, deny: []string{"web"}}, 0},
		{rule{from: "web/...", deny: []string{"service/...", "store/..."}, allow: []string{"store"}}, 1}, // service still denied
		{rule{from: "service", deny: []string{"store/..."}, allow: []string{"store/..."}}, 0},
	}
	for _, tc := range tests {
		got, checked := violations(tc.r, pkgs)
		if len(got) != tc.want || checked != 1 {
			t.Errorf("%+v: %d packages checked, problems %q, want %d", tc.r, checked, got, tc.want)
		}
	}
}
