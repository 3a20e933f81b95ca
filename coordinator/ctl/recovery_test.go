package ctl_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestRecoveryCertCommands adds, lists and retires recovery certificates against the real
// coordinator, on SQLite and on PostgreSQL.
func TestRecoveryCertCommands(t *testing.T) {
	t.Parallel()
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			opts := coordinatortest.Options{Driver: driver}
			if driver == "postgres" {
				opts.DSN = testenv.PostgresDatabase(t)
			}
			inst := coordinatortest.Start(t, opts)
			env := map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": inst.AdminToken}

			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			expires := time.Now().UTC().AddDate(4, 0, 0)
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Clé de secours DAJ"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: expires, KeyUsage: x509.KeyUsageKeyAgreement}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "backup.pem")
			if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
				t.Fatal(err)
			}

			r := runCtl(t, env, "", "recovery-cert", "add", file)
			if r.code != 0 || !strings.Contains(r.stdout, "Clé de secours DAJ, expires "+expires.Format("2006-01-02")) {
				t.Fatalf("add: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			id := regexp.MustCompile(`recovery certificate (\S+) added`).FindStringSubmatch(r.stdout)
			if id == nil {
				t.Fatalf("add printed no ID: %q", r.stdout)
			}
			if r = runCtl(t, env, "", "recovery-cert", "add", file); r.code == 0 || !strings.Contains(r.stderr, "kept already") {
				t.Fatalf("add again: exit %d, stderr %q", r.code, r.stderr)
			}
			if r = runCtl(t, env, "not a certificate", "recovery-cert", "add", "-"); r.code == 0 || !strings.Contains(r.stderr, "is not a PEM certificate") {
				t.Fatalf("add garbage: exit %d, stderr %q", r.code, r.stderr)
			}
			r = runCtl(t, env, "", "recovery-cert", "list")
			if r.code != 0 || !strings.Contains(r.stdout, id[1]) || !strings.Contains(r.stdout, "Clé de secours DAJ") || !strings.Contains(r.stdout, "in use") {
				t.Fatalf("list: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if r = runCtl(t, env, "", "recovery-cert", "retire", id[1]); r.code == 0 || !strings.Contains(r.stderr, "--reason is required") {
				t.Fatalf("retire without a reason: exit %d, stderr %q", r.code, r.stderr)
			}
			if r = runCtl(t, env, "", "recovery-cert", "retire", id[1], "--reason", "officer left"); r.code != 0 || !strings.Contains(r.stdout, "retired") {
				t.Fatalf("retire: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if r = runCtl(t, env, "", "recovery-cert", "list"); r.code != 0 || strings.Contains(r.stdout, id[1]) {
				t.Fatalf("list after retiring: %q %q", r.stdout, r.stderr)
			}
			if r = runCtl(t, env, "", "recovery-cert", "list", "--all"); r.code != 0 || !strings.Contains(r.stdout, "retired ") {
				t.Fatalf("list --all: %q %q", r.stdout, r.stderr)
			}
		})
	}
}
