package httpapi

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// servedElsewhere are operations of openapi.yaml that the coordinator serves beside this
// handler: the CRL, at the path of the configured ca.crl_url.
var servedElsewhere = []string{"GET /crl"}

// TestRoutesDescribed holds the routes New registers to the operations of openapi.yaml:
// every route is described and every operation is routed. The routes are read from the
// source, as the patterns New passes to handle and authed.
func TestRoutesDescribed(t *testing.T) {
	src, err := os.ReadFile("httpapi.go")
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, m := range regexp.MustCompile(`(?m)^\s*(?:handle|authed)\("([A-Z]+ /[^"]*)"`).FindAllSubmatch(src, -1) {
		routes = append(routes, string(m[1]))
	}
	if len(routes) < 20 {
		t.Fatalf("found only %v in httpapi.go", routes)
	}
	data, err := os.ReadFile("../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for path, item := range doc.Paths {
		for method := range item {
			if slices.Contains([]string{"get", "put", "post", "delete", "patch"}, method) {
				ops = append(ops, strings.ToUpper(method)+" "+path)
			}
		}
	}
	for _, r := range routes {
		if !slices.Contains(ops, r) {
			t.Errorf("route %s is not in openapi.yaml", r)
		}
	}
	for _, o := range ops {
		if !slices.Contains(routes, o) && !slices.Contains(servedElsewhere, o) {
			t.Errorf("openapi.yaml describes %s, which the API does not route", o)
		}
	}
}
