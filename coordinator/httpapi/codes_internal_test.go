package httpapi

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// goCodes lists the error codes the API can answer with: every constant of type
// service.Code in the service's source, and the HTTP layer's own. Reading the source
// rather than a list kept by hand means a new code cannot be forgotten here.
func goCodes(t *testing.T) []service.Code {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../service/errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	codes := []service.Code{codeMethodNotAllowed, codeUnsupportedMediaType}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					t.Fatalf("a Code constant that is not a literal: %#v", v)
				}
				c, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				codes = append(codes, service.Code(c))
			}
		}
	}
	if len(codes) < 10 {
		t.Fatalf("found only %v in the service's source", codes)
	}
	return codes
}

// TestErrorCodesDescribed holds the Error schema of openapi.yaml to the codes: its enum
// is exactly the codes the API answers with, and each is described with the status
// statusOf gives it.
func TestErrorCodesDescribed(t *testing.T) {
	data, err := os.ReadFile("../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Error struct {
							Properties struct {
								Code struct {
									Enum        []string `yaml:"enum"`
									Description string   `yaml:"description"`
								} `yaml:"code"`
							} `yaml:"properties"`
						} `yaml:"error"`
					} `yaml:"properties"`
				} `yaml:"Error"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	code := doc.Components.Schemas.Error.Properties.Error.Properties.Code
	described := map[string]int{}
	for _, m := range regexp.MustCompile(`([a-z_]+) \((\d{3})`).FindAllStringSubmatch(code.Description, -1) {
		described[m[1]], _ = strconv.Atoi(m[2])
	}
	codes := goCodes(t)
	for _, c := range codes {
		if !slices.Contains(code.Enum, string(c)) {
			t.Errorf("code %s is not in the Error schema's enum", c)
		}
		status, ok := described[string(c)]
		switch {
		case !ok:
			t.Errorf("code %s: the description gives no status", c)
		case status != statusOf(c):
			t.Errorf("code %s: described as %d, answered with %d", c, status, statusOf(c))
		}
	}
	for _, c := range code.Enum {
		if !slices.Contains(codes, service.Code(c)) {
			t.Errorf("the Error schema's enum has %s, which no Go constant defines", c)
		}
	}
}
