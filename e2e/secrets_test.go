//go:build cgo

package e2e_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// finalChecks is how every test ends: the audit log's hash chain verifies (tokenfleetctl
// audit verify), every log line is well formed (checkLogs), and no PIN leaked
// (checkNoPINs).
func (s *system) finalChecks() {
	s.t.Helper()
	if out := s.ctl(s.admin, "audit", "verify"); !strings.Contains(out, "audit log verified") {
		s.t.Errorf("tokenfleetctl audit verify: %s", out)
	}
	s.checkLogs()
	s.checkNoPINs()
}

// checkNoPINs looks for every PIN the test's jobs set, in every encoding a careless line of
// code could leave it in, in everything the system wrote: every log line of the
// coordinator and the agents (debug level), every file of the agents' data directories
// (the journal, its -wal and -shm) and of the coordinator's (the database and its -wal),
// and every message the broker carried in the test's vhost (the tap). The PINs are those
// revealed with tokenfleetctl job pin and every PIN the coordinator keeps, opened with its
// result key. A test that set no PIN fails here: the scan must look for something.
func (s *system) checkNoPINs() {
	s.t.Helper()
	s.collectKeptPINs()
	s.mu.Lock()
	pins := make(map[string]string, len(s.pins))
	for k, v := range s.pins {
		pins[k] = v
	}
	sources := map[string][]byte{}
	for name, l := range s.logs {
		sources["log of "+name] = l.Bytes()
	}
	for name, data := range s.snapshots {
		sources[name] = data
	}
	dirs := append([]string{s.coord.DataDir}, s.dataDirs...)
	s.mu.Unlock()
	if len(pins) == 0 {
		s.t.Fatal("checkNoPINs: the test set no PIN to look for")
	}
	for _, dir := range dirs {
		for path, data := range readTree(s.t, dir) {
			sources["file "+path] = data
		}
	}
	msgs := s.tap.messages(s.t)
	if len(msgs) == 0 {
		s.t.Fatal("checkNoPINs: the tap holds no message")
	}
	for i, m := range msgs {
		sources[fmt.Sprintf("broker message %d (%s %s via %s %q)", i, m.typ, m.messageID, m.exchange, m.routingKey)] =
			append(append([]byte(nil), m.body...), m.properties...)
	}
	// The scan must have had something of each kind to look at.
	exchanges := map[string]bool{}
	for _, m := range msgs {
		exchanges[m.exchange] = true
	}
	// Commands go through the default exchange (protocol.CommandRoute).
	if !exchanges[protocol.DefaultExchange] || !exchanges[protocol.EventsExchange] {
		s.t.Fatalf("checkNoPINs: the tap saw messages on %v, want the commands (default exchange) and the events exchange", exchanges)
	}
	for _, want := range []string{journal.FileName, coordinator.DatabaseFile} {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(sources)), func(n string) bool { return strings.Contains(n, string(filepath.Separator)+want) }) {
			s.t.Fatalf("checkNoPINs: no %s to look at", want)
		}
	}
	for _, f := range findSecrets(pins, sources) {
		s.t.Error(f)
	}
	// No private key in PEM, whichever: logs and messages never carry one (the data
	// directories do, the CA's and the result key, in files of their own).
	for name, data := range sources {
		if !strings.HasPrefix(name, "file ") && bytes.Contains(data, []byte("PRIVATE KEY-----")) {
			s.t.Errorf("%s holds a PEM private key", name)
		}
	}
	var files []string
	for name := range sources {
		if f, ok := strings.CutPrefix(name, "file "); ok {
			files = append(files, filepath.Base(f))
		}
	}
	slices.Sort(files)
	s.t.Logf("secret scan: %d PINs, %d sources (%d broker messages), nothing found; files %v", len(pins), len(sources), len(msgs), files)
}

// rememberPrivateKey adds a private key the test obtained (a PEM file of PKCS#8, as
// openssl writes it) to the secrets the scan looks for: its DER form, and its first
// prime, or its private scalar, on their own.
func (s *system) rememberPrivateKey(what, pemFile string) {
	s.t.Helper()
	data, err := os.ReadFile(pemFile)
	if err != nil {
		s.t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		s.t.Fatalf("%s: no PEM block", pemFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		s.t.Fatalf("%s: %v", pemFile, err)
	}
	s.remember(what+" (PKCS#8)", string(b.Bytes))
	switch k := k.(type) {
	case *rsa.PrivateKey:
		s.remember(what+" (its prime p)", string(k.Primes[0].Bytes()))
	case *ecdsa.PrivateKey:
		d, err := k.Bytes()
		if err != nil {
			s.t.Fatal(err)
		}
		s.remember(what+" (its scalar)", string(d))
	}
}

// snapshot keeps the files of a directory as they are now, for the secret scan.
func (s *system) snapshot(dir, when string) {
	s.t.Helper()
	files := readTree(s.t, dir)
	s.mu.Lock()
	defer s.mu.Unlock()
	for path, data := range files {
		s.snapshots[fmt.Sprintf("file %s %s", path, when)] = data
	}
}

// readTree reads every file under dir.
func readTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out[path] = data
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	return out
}

// collectKeptPINs opens every PIN the coordinator keeps (user and SO PINs, of every job)
// with its result key, reading them from its database as stored.
func (s *system) collectKeptPINs() {
	s.t.Helper()
	key, _, err := dispatch.LoadOrCreateResultKey(filepath.Join(s.coord.DataDir, dispatch.ResultKeyFile))
	if err != nil {
		s.t.Fatal(err)
	}
	for _, p := range s.keptPINs() {
		pin, err := dispatch.OpenTokenPIN(key, p)
		if err != nil {
			s.t.Fatalf("opening the kept %s of job %s: %v", p.Purpose, p.JobID, err)
		}
		s.remember(fmt.Sprintf("%s kept for token %s (job %s attempt %d)", p.Purpose, p.TokenSerial, p.JobID, p.Attempt), string(pin))
	}
}

// keptPINs reads the coordinator's kept PINs straight from its SQLite database.
func (s *system) keptPINs() []store.TokenPIN {
	s.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(s.coord.DataDir, coordinator.DatabaseFile)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	rows, err := db.QueryContext(context.Background(), "SELECT id, token_serial, purpose, job_id, attempt, sealed FROM token_pins ORDER BY id")
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var out []store.TokenPIN
	for rows.Next() {
		var p store.TokenPIN
		var sealed string
		if err := rows.Scan(&p.ID, &p.TokenSerial, &p.Purpose, &p.JobID, &p.Attempt, &sealed); err != nil {
			s.t.Fatal(err)
		}
		p.Sealed = []byte(sealed)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// keptPIN returns the newest kept PIN of the purpose for the token, opened.
func (s *system) keptPIN(serial, purpose string) string {
	s.t.Helper()
	key, _, err := dispatch.LoadOrCreateResultKey(filepath.Join(s.coord.DataDir, dispatch.ResultKeyFile))
	if err != nil {
		s.t.Fatal(err)
	}
	var newest *store.TokenPIN
	for _, p := range s.keptPINs() {
		if p.TokenSerial == serial && p.Purpose == purpose {
			newest = &p
		}
	}
	if newest == nil {
		s.t.Fatalf("the coordinator keeps no %s for token %s", purpose, serial)
	}
	pin, err := dispatch.OpenTokenPIN(key, *newest)
	if err != nil {
		s.t.Fatal(err)
	}
	s.remember(fmt.Sprintf("%s kept for token %s (job %s)", purpose, serial, newest.JobID), string(pin))
	return string(pin)
}

// encodings returns what to look for, for one secret: the secret in clear, in hex (both
// cases) and in base64 (standard and URL alphabets, padded or not). A secret inside a
// longer base64 text is encoded by groups of three bytes, so for each of the three ways it
// can fall on the groups, the part that depends on the secret alone is looked for too,
// when it is long enough (8 characters) not to turn up by chance.
func encodings(secret string) map[string][]byte {
	out := map[string][]byte{
		"clear":            []byte(secret),
		"hex":              []byte(hex.EncodeToString([]byte(secret))),
		"HEX":              []byte(strings.ToUpper(hex.EncodeToString([]byte(secret)))),
		"base64":           []byte(base64.StdEncoding.EncodeToString([]byte(secret))),
		"base64, unpadded": []byte(base64.RawStdEncoding.EncodeToString([]byte(secret))),
		"base64url":        []byte(base64.RawURLEncoding.EncodeToString([]byte(secret))),
	}
	for shift := range 3 {
		whole := (len(secret) - shift) / 3 * 3
		if whole < 6 {
			continue
		}
		part := []byte(secret[shift : shift+whole])
		out[fmt.Sprintf("base64 inside a longer text (from character %d)", shift)] = []byte(base64.StdEncoding.EncodeToString(part))
		out[fmt.Sprintf("base64url inside a longer text (from character %d)", shift)] = []byte(base64.URLEncoding.EncodeToString(part))
	}
	return out
}

// findSecrets reports every place a secret shows in a source, in any of its encodings.
func findSecrets(secrets map[string]string, sources map[string][]byte) []string {
	var found []string
	names := make([]string, 0, len(sources))
	for n := range sources {
		names = append(names, n)
	}
	slices.Sort(names)
	for what, secret := range secrets {
		if len(secret) < 4 {
			found = append(found, fmt.Sprintf("%s is too short (%d characters) to be looked for", what, len(secret)))
			continue
		}
		for enc, needle := range encodings(secret) {
			for _, name := range names {
				data := sources[name]
				if i := bytes.Index(data, needle); i >= 0 {
					lo, hi := max(0, i-80), min(len(data), i+len(needle)+80)
					found = append(found, fmt.Sprintf("the %s appears (%s) in the %s: ...%q...", what, enc, name, data[lo:hi]))
				}
			}
		}
	}
	slices.Sort(found)
	return found
}

// TestSecretScanFindsPINs: the scan every test ends with finds a PIN in each encoding,
// wherever it sits in a longer text, and reports nothing where it is absent.
func TestSecretScanFindsPINs(t *testing.T) {
	const pin = "Xq7rB2mK9pZt4w"
	secrets := map[string]string{"test PIN": pin}
	inB64 := func(prefix string) []byte {
		return []byte(base64.StdEncoding.EncodeToString([]byte(prefix + `{"pin":"` + pin + `"}`)))
	}
	cases := map[string][]byte{
		"clear in a log line":    []byte(`{"level":"debug","user_pin":"` + pin + `","message":"oops"}`),
		"hex in a file":          []byte("\x00\x01" + hex.EncodeToString([]byte("pin="+pin)) + "\x02"),
		"HEX in a message":       []byte("secret " + strings.ToUpper(hex.EncodeToString([]byte(pin)))),
		"base64, PIN at byte 8":  inB64(""),
		"base64, PIN at byte 9":  inB64("a"),
		"base64, PIN at byte 10": inB64("ab"),
		"base64url":              []byte(base64.RawURLEncoding.EncodeToString([]byte("\xff\xfe" + pin))),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if found := findSecrets(secrets, map[string][]byte{name: data}); len(found) == 0 {
				t.Errorf("the PIN in %q was not found", data)
			}
		})
	}
	clean := map[string][]byte{
		"other PIN":  []byte(`{"user_pin":"Yq7rB2mK9pZt4w"}`),
		"prefix":     []byte(pin[:len(pin)-1]),
		"other data": inB64("abc")[:8],
	}
	if found := findSecrets(secrets, clean); len(found) != 0 {
		t.Errorf("found where the PIN is not: %v", found)
	}
}
