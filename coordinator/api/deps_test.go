package api_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// allowedImports are the packages of the project the API types may use: domain types
// with no store, service or transport behind them. Both the server and every client
// import this package, so what it imports, they all carry.
var allowedImports = map[string]bool{
	"github.com/tokenfleet/tokenfleet/coordinator/audit": true,
	"github.com/tokenfleet/tokenfleet/coordinator/jobs":  true,
	// A rollout's spec and its states: the rules of rollouts, with no store behind them.
	"github.com/tokenfleet/tokenfleet/coordinator/rollout": true,
	// The wire types the agent shares (enrolment); a leaf package.
	"github.com/tokenfleet/tokenfleet/protocol": true,
}

func TestImports(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(path, "github.com/tokenfleet/") && !allowedImports[path] {
				t.Errorf("%s imports %s: the API types use only %v of the project", name, path, allowedImports)
			}
		}
	}
}
