package keys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

func TestLoadOrCreateMakesAPrivateKeyOnceAndKeepsIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	if dst, err := os.Stat(dir); err != nil || dst.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v (%v), want 0700", dst.Mode().Perm(), err)
	}
	second, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.PublicKey(), second.PublicKey()) || first.KeyID() != second.KeyID() {
		t.Fatal("a second start made another key instead of loading the first")
	}
	if first.KeyID() != protocol.KeyFingerprint(first.PublicKey()) {
		t.Errorf("KeyID %s is not the fingerprint of the public key", first.KeyID())
	}
	if _, err := seal.ParsePublicKey(first.PublicKey()); err != nil {
		t.Errorf("public key is not a PKIX X25519 key: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data directory holds %d entries, want only the key file", len(entries))
	}
}

func TestConcurrentFirstStartsAgreeOnOneKey(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p, err := LoadOrCreate(dir)
			errs[i] = err
			if err == nil {
				ids[i] = p.KeyID()
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("start %d got key %s, start 0 got %s", i, ids[i], ids[0])
		}
	}
}

func TestSealToSelfRoundTrip(t *testing.T) {
	p, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := seal.Binding{JobID: "job-1", Attempt: 2, Purpose: protocol.PurposeAgentResume}
	s, err := p.Seal([]byte("user_pin\x00482913"), b)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID != p.KeyID() {
		t.Errorf("sealed to %s, want the pair's own key %s", s.KeyID, p.KeyID())
	}
	got, err := p.Open(s, b)
	if err != nil || string(got) != "user_pin\x00482913" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	other := b
	other.Purpose = protocol.PurposeUserPIN
	if _, err := p.Open(s, other); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("a resume secret opened as a user PIN: %v", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	good := func(t *testing.T) string {
		dir := t.TempDir()
		if _, err := LoadOrCreate(dir); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, FileName)
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		want  string
	}{
		{"readable by group", func(t *testing.T) string {
			p := good(t)
			if err := os.Chmod(p, 0o640); err != nil {
				t.Fatal(err)
			}
			return p
		}, "mode 0640: others may read"},
		{"readable by everyone", func(t *testing.T) string {
			p := good(t)
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, "mode 0644"},
		{"symlink", func(t *testing.T) string {
			p := good(t)
			link := filepath.Join(t.TempDir(), "link.pem")
			if err := os.Symlink(p, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "not a regular file"},
		{"not PEM", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(p, []byte("hello"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, "holds no \"PRIVATE KEY\" PEM block"},
		{"trailing data", func(t *testing.T) string {
			p := good(t)
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.WriteString("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
			_ = f.Close()
			return p
		}, "data after its key"},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), FileName) }, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.setup(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadOrCreateRefusesAnExposedKeyInsteadOfReplacingIt(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	before, _ := os.ReadFile(path)
	if err := os.Chmod(path, 0o604); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir); err == nil {
		t.Fatal("an exposed key file was accepted")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("the exposed key file was rewritten; it must be left for the administrator")
	}
}
