package pkcs11_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
)

func TestParseKeySpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want pkcs11.KeySpec
		ok   bool
	}{
		{"rsa-2048", pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048}, true},
		{"RSA-4096", pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 4096}, true},
		{"ec-p256", pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}, true},
		{"ec-P-384", pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-384"}, true},
		{" ecdsa-p521 ", pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-521"}, true},
		{"rsa-1024", pkcs11.KeySpec{}, false},
		{"rsa-2049", pkcs11.KeySpec{}, false},
		{"rsa-big", pkcs11.KeySpec{}, false},
		{"ec-p192", pkcs11.KeySpec{}, false},
		{"ed25519", pkcs11.KeySpec{}, false},
		{"dsa-2048", pkcs11.KeySpec{}, false},
	} {
		got, err := pkcs11.ParseKeySpec(tc.in)
		if !tc.ok {
			if pkcs11.CodeOf(err) != pkcs11.CodeInvalidArgument {
				t.Errorf("ParseKeySpec(%q) = %v, %v; want invalid_argument", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseKeySpec(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		if again, err := pkcs11.ParseKeySpec(got.String()); err != nil || again != got {
			t.Errorf("round trip of %v via %q: %v, %v", got, got.String(), again, err)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	e := &pkcs11.Error{Op: "login", Code: pkcs11.CodePINLocked, Token: "abc123", Label: "alice",
		PIN: &pkcs11.PINStatus{Locked: true}, Err: errors.New("CKR_PIN_LOCKED")}
	wrapped := fmt.Errorf("job 7: %w", e)
	if !errors.Is(wrapped, pkcs11.ErrPINLocked) || errors.Is(wrapped, pkcs11.ErrPINIncorrect) {
		t.Error("errors.Is does not compare codes")
	}
	if pkcs11.CodeOf(wrapped) != pkcs11.CodePINLocked {
		t.Errorf("CodeOf = %s", pkcs11.CodeOf(wrapped))
	}
	for _, want := range []string{"login", "abc123", `"alice"`, "token.pin_locked", "PIN locked"} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("%q lacks %q", e.Error(), want)
		}
	}
	if pkcs11.CodeOf(nil) != "" || pkcs11.CodeOf(errors.New("x")) != pkcs11.CodeGeneralError ||
		pkcs11.CodeOf(context.Canceled) != pkcs11.CodeCancelled {
		t.Error("CodeOf of plain errors")
	}
	for code, retry := range map[pkcs11.Code]bool{
		pkcs11.CodeNotPresent: true, pkcs11.CodeDeviceRemoved: true, pkcs11.CodeSessionError: true,
		pkcs11.CodeNotFound: true, pkcs11.CodePINIncorrect: false, pkcs11.CodePINLocked: false,
		pkcs11.CodeKeyExists: false, pkcs11.CodeMechanismNotSupported: false, pkcs11.CodeGeneralError: false,
	} {
		if got := pkcs11.Retryable(fmt.Errorf("x: %w", &pkcs11.Error{Code: code})); got != retry {
			t.Errorf("Retryable(%s) = %v", code, got)
		}
	}
	if pkcs11.Retryable(nil) || pkcs11.Retryable(errors.New("x")) {
		t.Error("Retryable of plain errors")
	}
	// The wire protocol reuses these strings: they must not drift.
	for code, want := range map[pkcs11.Code]string{
		pkcs11.CodePINIncorrect: "token.pin_incorrect", pkcs11.CodePINLocked: "token.pin_locked",
		pkcs11.CodePINLenRange: "token.pin_len_range", pkcs11.CodePINInvalid: "token.pin_invalid",
		pkcs11.CodePINExpired: "token.pin_expired", pkcs11.CodeNotPresent: "token.not_present",
		pkcs11.CodeDeviceRemoved: "token.device_removed", pkcs11.CodeDeviceError: "token.device_error",
		pkcs11.CodeNotInitialized: "token.not_initialized", pkcs11.CodeAlreadyInitialized: "token.already_initialized",
		pkcs11.CodeNotLoggedIn: "token.not_logged_in", pkcs11.CodeFunctionNotSupported: "token.function_not_supported",
		pkcs11.CodeMechanismNotSupported: "token.mechanism_not_supported", pkcs11.CodeKeyNotFound: "token.key_not_found",
		pkcs11.CodeCertificateNotFound: "token.certificate_not_found", pkcs11.CodeCertificateKeyMismatch: "token.certificate_key_mismatch",
		pkcs11.CodeNotFound: "token.not_found", pkcs11.CodeAmbiguous: "token.ambiguous",
		pkcs11.CodeWriteProtected: "token.write_protected", pkcs11.CodeMemoryFull: "token.memory_full",
		pkcs11.CodeModuleLoadFailed: "token.module_load_failed", pkcs11.CodeSessionError: "token.session_error",
		pkcs11.CodeGeneralError: "token.general_error",
	} {
		if string(code) != want {
			t.Errorf("code %q, want %q", code, want)
		}
	}
}

func TestKeySpecAndIDText(t *testing.T) {
	var s struct {
		Spec pkcs11.KeySpec `json:"spec"`
		ID   pkcs11.ID      `json:"id"`
	}
	if err := json.Unmarshal([]byte(`{"spec":"ec-p384"}`), &s); err != nil || s.Spec != (pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-384"}) {
		t.Fatalf("unmarshal spec: %v, %v", s.Spec, err)
	}
	if err := json.Unmarshal([]byte(`{"spec":"rsa-512"}`), &s); pkcs11.CodeOf(err) != pkcs11.CodeInvalidArgument {
		t.Errorf("unmarshal rsa-512: %v", err)
	}
	s.ID = pkcs11.ID{0xca, 0xfe}
	out, _ := json.Marshal(s)
	if string(out) != `{"spec":"ec-p384","id":"cafe"}` {
		t.Errorf("marshal: %s", out)
	}
}

// The package must build without cgo (the agent then reports that it cannot reach tokens),
// and its stub must offer what the real one offers, or programs built without cgo break.
func TestNoCgoStubMatchesTheRealAPI(t *testing.T) {
	withCgo, err := exportedAPI(true)
	if err != nil {
		t.Fatal(err)
	}
	without, err := exportedAPI(false)
	if err != nil {
		t.Fatal(err)
	}
	for name, sig := range withCgo {
		if without[name] != sig {
			t.Errorf("%s: cgo build has %q, no-cgo build has %q", name, sig, without[name])
		}
	}
	for name := range without {
		if _, ok := withCgo[name]; !ok {
			t.Errorf("%s exists only without cgo", name)
		}
	}

	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	cmd := exec.Command(gobin, "vet", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go vet: %v\n%s", err, out)
	}
}

// exportedAPI maps "Func", "Type" and "Type.Method" of the package's non-test files, as
// built with or without cgo, to their signatures (parameter types only).
func exportedAPI(cgo bool) (map[string]string, error) {
	ctx := build.Default
	ctx.CgoEnabled = cgo
	entries, err := os.ReadDir(".")
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	api := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		if ok, err := ctx.MatchFile(".", name); err != nil || !ok {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				key := d.Name.Name
				if d.Recv != nil {
					recv := types(fset, d.Recv)
					key = strings.TrimPrefix(recv, "*") + "." + key
					if !ast.IsExported(strings.TrimPrefix(recv, "*")) {
						continue
					}
				}
				api[key] = "(" + types(fset, d.Type.Params) + ") (" + types(fset, d.Type.Results) + ")"
			case *ast.GenDecl:
				for _, s := range d.Specs {
					if ts, ok := s.(*ast.TypeSpec); ok && ts.Name.IsExported() {
						api[ts.Name.Name] = "type"
					}
				}
			}
		}
	}
	return api, nil
}

func types(fset *token.FileSet, fl *ast.FieldList) string {
	if fl == nil {
		return ""
	}
	var out []string
	for _, f := range fl.List {
		var b strings.Builder
		_ = printer.Fprint(&b, fset, f.Type)
		n := max(len(f.Names), 1)
		out = append(out, slices.Repeat([]string{b.String()}, n)...)
	}
	return strings.Join(out, ", ")
}
