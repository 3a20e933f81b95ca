package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/protocol/internal/errorsgen"
)

// errorCodeConstants parses the package source and returns every constant
// declared with type ErrorCode, so a new constant cannot be forgotten in the
// table (and no list in this test has to be kept in step).
func errorCodeConstants(t *testing.T) map[string]ErrorCode {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ErrorCode{}
	for _, entry := range entries {
		name := entry.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "ErrorCode" {
					continue
				}
				for i, n := range vs.Names {
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: ErrorCode constant %s is not a string literal", fset.Position(n.Pos()), n.Name)
					}
					out[n.Name] = ErrorCode(constant.StringVal(constant.MakeFromLiteral(lit.Value, lit.Kind, 0)))
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("found no ErrorCode constants in the package source")
	}
	return out
}

func TestEveryCodeConstantIsInTheTable(t *testing.T) {
	consts := errorCodeConstants(t)
	declared := map[ErrorCode]string{}
	for name, code := range consts {
		if other, dup := declared[code]; dup {
			t.Errorf("%s and %s both spell %q", name, other, code)
		}
		declared[code] = name
		if !code.Known() {
			t.Errorf("constant %s = %q is missing from errors.json", name, code)
		}
	}
	for _, info := range ErrorCodes() {
		if _, ok := declared[info.Code]; !ok {
			t.Errorf("errors.json lists %q, which has no Go constant", info.Code)
		}
	}
}

// The PKCS#11 driver reports these exact strings; renaming one breaks the
// agent's error reporting.
func TestTokenCodesSpelling(t *testing.T) {
	want := []string{
		"token.pin_incorrect", "token.pin_locked", "token.pin_len_range", "token.pin_invalid",
		"token.pin_expired", "token.not_present", "token.device_removed", "token.device_error",
		"token.not_initialized", "token.already_initialized", "token.not_logged_in",
		"token.function_not_supported", "token.mechanism_not_supported", "token.key_not_found",
		"token.certificate_not_found", "token.certificate_key_mismatch", "token.not_found",
		"token.ambiguous", "token.write_protected", "token.memory_full", "token.module_load_failed",
		"token.session_error", "token.general_error",
		"token.invalid_argument", "token.cancelled", "token.key_exists",
	}
	var got []string
	for _, info := range ErrorCodes() {
		if strings.HasPrefix(string(info.Code), "token.") {
			got = append(got, string(info.Code))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("token codes:\n got  %q\n want %q", got, want)
	}
	generic := []ErrorCode{"bad_request", "unsupported_version", "unknown_type", "too_large", "malformed", "forged_sender", "stale_attempt", "duplicate", "internal"}
	job := []ErrorCode{"job_expired", "job_cancelled", "no_matching_token", "deadline_exceeded", "csr_rejected", "key_mismatch", "weak_key", "policy_violation"}
	for _, c := range append(generic, job...) {
		if !c.Known() {
			t.Errorf("code %q missing", c)
		}
	}
}

func TestRetryableDefaults(t *testing.T) {
	tests := []struct {
		code ErrorCode
		want bool
	}{
		{CodeTokenDeviceRemoved, true},
		{CodeTokenNotPresent, true},
		{CodeNoMatchingToken, true},
		{CodeInternal, true},
		{CodeTokenPINIncorrect, false},
		{CodeTokenPINLocked, false},
		{CodeMalformed, false},
		{CodeWeakKey, false},
		{"token.from_the_future", false},
	}
	for _, tc := range tests {
		if got := tc.code.Retryable(); got != tc.want {
			t.Errorf("%s.Retryable() = %v, want %v", tc.code, got, tc.want)
		}
		if got := NewError(tc.code, "x").Retryable; got != tc.want {
			t.Errorf("NewError(%s).Retryable = %v, want %v", tc.code, got, tc.want)
		}
	}
}

func TestLoadErrorTableRejects(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"not json", `{`, "unexpected end"},
		{"duplicate", `[{"code":"a","description":"x"},{"code":"a","description":"y"}]`, `code "a" listed twice`},
		{"bad code", `[{"code":"A","description":"x"}]`, "entry 0"},
		{"no description", `[{"code":"a"}]`, "description is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := loadErrorTable([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestErrorOnTheWire(t *testing.T) {
	cause := errors.New("CKR_DEVICE_REMOVED")
	e := NewError(CodeTokenDeviceRemoved, "write certificate on token %s: %w", "1234", cause)
	if !errors.Is(e, cause) {
		t.Error("NewError lost the wrapped cause")
	}
	if got, want := e.Error(), "token.device_removed: write certificate on token 1234: CKR_DEVICE_REMOVED"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), `{"code":"token.device_removed","message":"write certificate on token 1234: CKR_DEVICE_REMOVED","retryable":true}`; got != want {
		t.Errorf("JSON %s, want %s", got, want)
	}
	var back Error
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Code != e.Code || back.Message != e.Message || back.Retryable != e.Retryable {
		t.Errorf("round trip: got %+v", back)
	}
	if got := (&Error{Code: CodeDuplicate}).Error(); got != "duplicate" {
		t.Errorf("Error() without message = %q", got)
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		err  error
		want ErrorCode
	}{
		{nil, ""},
		{errors.New("disk full"), CodeInternal},
		{NewError(CodeStaleAttempt, "attempt 2 < 3"), CodeStaleAttempt},
		{fmt.Errorf("consume: %w", NewError(CodeDuplicate, "seen")), CodeDuplicate},
	}
	for _, tc := range tests {
		if got := CodeOf(tc.err); got != tc.want {
			t.Errorf("CodeOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestWithinBuildsFieldPaths(t *testing.T) {
	inner := invalid("label", "too long")
	tests := []struct {
		err  error
		want string
	}{
		{within("tokens[2]", inner), "bad_request: tokens[2].label: too long"},
		{within("body", within("tokens", within("[2]", inner))), "bad_request: body.tokens[2].label: too long"},
		{within("pins", invalid("", "empty")), "bad_request: pins: empty"},
		{within("body", NewError(CodeMalformed, "json: bad")), "malformed: body: json: bad"},
		{within("x", errors.New("plain")), "x: plain"},
		{within("x", nil), "<nil>"},
	}
	for _, tc := range tests {
		if got := fmt.Sprint(tc.err); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

// TestErrorConstantsGenerated: errors_codes.go is what errorsgen makes of errors.json
// (go generate ./protocol after editing the table).
func TestErrorConstantsGenerated(t *testing.T) {
	want, err := errorsgen.Generate(errorsJSON)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("errors_codes.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("errors_codes.go is not what errors.json generates: run go generate ./protocol")
	}
}
