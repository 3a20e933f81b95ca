//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// sharedLibrary returns a real shared library that is not a PKCS#11 module: one SoftHSM2
// itself links against, as ldd shows.
func sharedLibrary(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`=> (/\S+libcrypto\S*)`).FindStringSubmatch(testenv.Run(t, "ldd", testenv.SoftHSMModule))
	if m == nil {
		t.Fatal("ldd shows no libcrypto under SoftHSM2")
	}
	return m[1]
}

func TestOpenSaysWhyAModuleDoesNotLoad(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, path, reason string
		code               pkcs11.Code
	}{
		{"missing file", "/nonexistent/libnothing.so", "does not exist", pkcs11.CodeModuleLoadFailed},
		{"directory", dir, "is a directory", pkcs11.CodeModuleLoadFailed},
		{"not a library", writeFile(t, "libnotpkcs11.so", []byte("not an ELF file")), "not an ELF shared library", pkcs11.CodeModuleLoadFailed},
		{"not a PKCS#11 module", sharedLibrary(t), "no C_GetFunctionList", pkcs11.CodeModuleLoadFailed},
		{"empty path", "", "empty module path", pkcs11.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mod, err := pkcs11.Open(tc.path, pkcs11.Options{})
			if mod != nil {
				t.Fatal("got a module")
			}
			wantCode(t, err, tc.code)
			if !strings.Contains(err.Error(), tc.reason) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q should name %q and say %q", err, tc.path, tc.reason)
			}
		})
	}
}

func TestModulesShareOneInitialization(t *testing.T) {
	ctx := context.Background()
	a, err := pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{})
	if err != nil {
		t.Fatalf("second Open of the same module: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.Slots(ctx); err != nil {
		t.Fatalf("the other module stopped working when one was closed: %v", err)
	}
	if _, err := a.Slots(ctx); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("closed module: got %v", err)
	}
	info, err := b.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Manufacturer != "SoftHSM" || info.Path != testenv.SoftHSMModule || info.CryptokiVersion == "" {
		t.Errorf("module info %+v", info)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Finalized: opening again initializes again.
	c := openModule(t, pkcs11.Options{})
	if _, err := c.Slots(ctx); err != nil {
		t.Fatal(err)
	}
}

// resolvedModule is the file SoftHSM2's configured path links to; the test fails if it is
// the same path, as it would then prove nothing.
func resolvedModule(t *testing.T) string {
	t.Helper()
	resolved, err := filepath.EvalSymlinks(testenv.SoftHSMModule)
	if err != nil {
		t.Fatal(err)
	}
	if resolved == testenv.SoftHSMModule {
		t.Fatalf("%s is no symbolic link: the test needs Debian's layout", testenv.SoftHSMModule)
	}
	return resolved
}

// TestOneLibraryUnderManyPaths: the dynamic loader loads a file once whatever path names
// it, so Modules opened by different paths to it must share one library. Were they two,
// the second would find the library initialised and leave C_Finalize to the first, whose
// Close would then finalize it under the second.
func TestOneLibraryUnderManyPaths(t *testing.T) {
	ctx := context.Background()
	resolved := resolvedModule(t)
	link := filepath.Join(t.TempDir(), "libsofthsm2.so")
	if err := os.Symlink(testenv.SoftHSMModule, link); err != nil {
		t.Fatal(err)
	}
	paths := []string{
		testenv.SoftHSMModule,
		resolved,
		link, // a link to a link
		filepath.Dir(resolved) + "/../softhsm/./libsofthsm2.so",
	}
	var mods []*pkcs11.Module
	for _, p := range paths {
		m, err := pkcs11.Open(p, pkcs11.Options{})
		if err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
		mods = append(mods, m)
	}
	// Close them in turn; each time, every one still open keeps working.
	for i, m := range mods {
		if err := m.Close(); err != nil {
			t.Fatalf("close the module opened as %s: %v", paths[i], err)
		}
		for j := i + 1; j < len(mods); j++ {
			if _, err := mods[j].Slots(ctx); err != nil {
				t.Fatalf("the module opened as %s stopped working when the one opened as %s was closed: %v", paths[j], paths[i], err)
			}
		}
	}
	// Each Module still reports the path it was opened with.
	again := openModuleAt(t, link, pkcs11.Options{})
	if info, err := again.Info(ctx); err != nil || info.Path != link {
		t.Errorf("module info %+v, %v: want the path %s", info, err, link)
	}
}

func TestSlotsDescribeTokens(t *testing.T) {
	ctx := context.Background()
	label, serial := newToken(t)
	mod := openModule(t, pkcs11.Options{})
	slots, err := mod.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mine *pkcs11.Slot
	free := 0
	for i, s := range slots {
		if s.Free {
			free++
			if s.Token == nil || s.Token.Initialized {
				t.Errorf("free slot %+v", s)
			}
		}
		if s.Token != nil && s.Token.Serial == serial {
			mine = &slots[i]
		}
	}
	if free == 0 {
		t.Error("SoftHSM always offers a free slot; none listed as free")
	}
	if mine == nil || !mine.TokenPresent || mine.Free {
		t.Fatalf("token %s not listed, or listed as free: %+v", serial, slots)
	}
	ti := mine.Token
	if ti.Label != label || ti.Manufacturer != "SoftHSM project" || ti.Model != "SoftHSM v2" ||
		!ti.Initialized || !ti.UserPINInitialized || !ti.LoginRequired || !ti.RNG ||
		ti.MinPINLen != 4 || ti.MaxPINLen != 255 || ti.HardwareVersion == "" || ti.FirmwareVersion == "" {
		t.Errorf("token info %+v", ti)
	}
	if ti.UserPIN != (pkcs11.PINStatus{}) || ti.SOPIN != (pkcs11.PINStatus{}) {
		t.Errorf("PIN status of a fresh token: user %+v, SO %+v", ti.UserPIN, ti.SOPIN)
	}
	// pkcs11-tool sees the same token.
	out := testenv.PKCS11Tool(t, "--list-token-slots")
	if !strings.Contains(out, serial) || !strings.Contains(out, label) {
		t.Errorf("pkcs11-tool -L does not show %s/%s:\n%s", label, serial, out)
	}

	// JSON, as `tokenfleet-agent tokens --json` prints it: snake_case, and memory the
	// token does not report is null, not a huge number.
	js, err := json.Marshal(mine)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	tok := back["token"].(map[string]any)
	for _, k := range []string{"label", "serial", "manufacturer", "model", "hardware_version", "firmware_version",
		"user_pin_initialized", "login_required", "write_protected", "protected_authentication_path", "rng",
		"min_pin_len", "max_pin_len", "total_public_memory", "free_private_memory"} {
		if _, ok := tok[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, js)
		}
	}
	if up := tok["user_pin"].(map[string]any); up["final_try"] != false || up["locked"] != false {
		t.Errorf("user_pin in JSON: %v", up)
	}
	// SoftHSM2 reports CK_UNAVAILABLE_INFORMATION for all four.
	if ti.TotalPublicMemory != nil || ti.FreePublicMemory != nil || ti.TotalPrivateMemory != nil || ti.FreePrivateMemory != nil {
		t.Errorf("unavailable memory must be nil: %v %v %v %v", ti.TotalPublicMemory, ti.FreePublicMemory, ti.TotalPrivateMemory, ti.FreePrivateMemory)
	}
	for _, k := range []string{"total_public_memory", "free_public_memory", "total_private_memory", "free_private_memory"} {
		if v, ok := tok[k]; !ok || v != nil {
			t.Errorf("%s = %v in JSON: unavailable memory must be null", k, v)
		}
	}
}

func TestFindTokenByURI(t *testing.T) {
	ctx := context.Background()
	label1, serial1 := newToken(t)
	label2, serial2 := newToken(t)
	mod := openModule(t, pkcs11.Options{})

	for _, s := range []string{
		"pkcs11:serial=" + serial2,
		"pkcs11:token=" + label2,
		"pkcs11:token=" + label2 + ";model=SoftHSM%20v2;manufacturer=SoftHSM%20project",
		"pkcs11:token=" + label2 + ";library-manufacturer=SoftHSM",
	} {
		sel, err := uri.Parse(s)
		if err != nil {
			t.Fatalf("parse %s: %v", s, err)
		}
		tok, err := mod.FindToken(ctx, sel)
		if err != nil {
			t.Fatalf("FindToken(%s): %v", s, err)
		}
		if tok.Serial() != serial2 {
			t.Errorf("FindToken(%s) found %s, want %s", s, tok.Serial(), serial2)
		}
		_ = tok.Close()
	}

	_, err := mod.FindToken(ctx, &uri.URI{Token: "no such token"})
	wantCode(t, err, pkcs11.CodeNotFound)
	if !errors.Is(err, pkcs11.ErrNotFound) || !pkcs11.Retryable(err) {
		t.Error("not found should match ErrNotFound and be retryable (the token may be plugged in later)")
	}
	if !strings.Contains(err.Error(), label1) || !strings.Contains(err.Error(), serial2) {
		t.Errorf("not-found error should list the tokens present: %v", err)
	}
	_, err = mod.FindToken(ctx, &uri.URI{Token: label1, LibraryManufacturer: "Some Vendor"})
	wantCode(t, err, pkcs11.CodeNotFound)

	_, err = mod.FindToken(ctx, &uri.URI{Manufacturer: "SoftHSM project"})
	wantCode(t, err, pkcs11.CodeAmbiguous)
	if !strings.Contains(err.Error(), serial1) || !strings.Contains(err.Error(), serial2) {
		t.Errorf("ambiguous error should name the candidates: %v", err)
	}
	_, err = mod.FindToken(ctx, nil)
	wantCode(t, err, pkcs11.CodeInvalidArgument)

	// A PIN in the URI never shows in an error.
	sel, err := uri.Parse("pkcs11:token=nothing-here?pin-value=s3cr3t-pin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mod.FindToken(ctx, sel); err == nil || strings.Contains(err.Error(), "s3cr3t-pin") {
		t.Errorf("error shows the PIN of the URI: %v", err)
	}
}

func TestOperationsAreLoggedWithoutPINs(t *testing.T) {
	ctx := context.Background()
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.DebugLevel)
	_, serial := newToken(t)
	mod := openModule(t, pkcs11.Options{Logger: log})
	tok := openToken(t, mod, serial)
	_ = tok.Login(ctx, "Wr0ng-PIN-q")
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := tok.ChangeUserPIN(ctx, userPIN, "N3w-PIN-zz"); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{`"op":"login"`, `"code":"token.pin_incorrect"`, `"op":"change user PIN"`, serial} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for _, pin := range []string{"Wr0ng-PIN-q", "N3w-PIN-zz"} {
		if strings.Contains(out, pin) {
			t.Errorf("log shows a PIN:\n%s", out)
		}
	}
}
