package rollout

import (
	"go/build"
	"strings"
	"testing"
)

// The rules stay pure: the standard library, the YAML decoder and the job rules only, so
// that the store, the service, the API and the CLI can all use them without a cycle and
// without pulling I/O into them.
func TestImportsOnlyTheRules(t *testing.T) {
	t.Parallel()
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		"go.yaml.in/yaml/v3": true,
		"github.com/tokenfleet/tokenfleet/coordinator/jobs": true,
	}
	for _, imp := range pkg.Imports {
		if !allowed[imp] && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
			t.Errorf("rollout imports %s", imp)
		}
	}
}
