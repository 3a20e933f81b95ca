package ctl_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// ctlRun runs tokenfleetctl against one coordinator as one caller.
type ctlRun struct {
	t   *testing.T
	env map[string]string
}

// ok runs args and fails the test unless they succeed; it returns standard output and
// standard error.
func (c ctlRun) ok(args ...string) (string, string) {
	c.t.Helper()
	r := runCtl(c.t, c.env, "", args...)
	if r.code != 0 {
		c.t.Fatalf("%v: exit %d, stderr %q", args, r.code, r.stderr)
	}
	return r.stdout, r.stderr
}

// fails runs args and fails the test unless they exit with code and one line on standard
// error that contains want, with nothing on standard output.
func (c ctlRun) fails(code int, want string, args ...string) {
	c.t.Helper()
	r := runCtl(c.t, c.env, "", args...)
	if r.code != code || !strings.Contains(r.stderr, want) || r.stdout != "" {
		c.t.Errorf("%v: exit %d stdout %q stderr %q, want exit %d and %q", args, r.code, r.stdout, r.stderr, code, want)
		return
	}
	oneLine(c.t, "stderr", r.stderr)
}

// caRoot is the SHA-256 fingerprint of the root of the coordinator's CA, as the API
// gives it.
func caRoot(t *testing.T, inst *coordinatortest.Instance) string {
	t.Helper()
	c, err := client.New(inst.URL, inst.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.CACertificates(context.Background())
	if err != nil || len(chain.Certificates) == 0 {
		t.Fatalf("CA chain %+v: %v", chain, err)
	}
	return chain.Certificates[len(chain.Certificates)-1].SHA256
}

// TestEnrolmentKeysAgainstCoordinator creates, lists and revokes codes and keys with the
// real coordinator, which needs no broker for them.
func TestEnrolmentKeysAgainstCoordinator(t *testing.T) {
	t.Parallel()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	admin := ctlRun{t, map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": inst.AdminToken}}
	admin.ok("org", "create", "acme")
	fp := caRoot(t, inst)
	fpLine := "CA fingerprint (SHA-256): " + fp + " (tokenfleet-agent enrol --ca-fingerprint)\n"
	const warning = "tokenfleetctl: warning: the secrets above are shown only this once: the coordinator keeps their hashes\n"

	// A reusable key: its secret in a table, what its agents get, the CA to pin.
	out, errOut := admin.ok("enrolment-key", "create", "--kind", "key", "--name", "paris laptops", "--org", "acme",
		"--tag", "site:paris", "--tag", "Laptop", "--max-uses", "10", "--expires-in", "7d")
	m := regexp.MustCompile(`^enrolment key (\S+) created \(organisation acme; tags laptop,site:paris; agents wait for approval; uses 0/10\)\n` +
		`ID +SECRET +AGENT +EXPIRES\n(\S+) +(tfe_\S+) +- +` + anyTime + `\n$`).FindStringSubmatch(strings.TrimSuffix(out, fpLine))
	if m == nil || m[1] != m[2] || !strings.HasSuffix(out, fpLine) || errOut != warning {
		t.Fatalf("create --kind key printed:\n%s\nstderr %q", out, errOut)
	}
	keyID := m[1]

	// Codes as CSV on standard output: only the CSV there; the fingerprint beside it.
	out, errOut = admin.ok("enrolment-key", "create", "--kind", "code", "--count", "3", "--pre-approved", "--csv")
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 4 || strings.Join(rows[0], ",") != "id,secret,agent_id,expires" {
		t.Fatalf("create --csv printed %q: %v", out, err)
	}
	secrets := map[string]bool{}
	for _, row := range rows[1:] {
		if _, err := time.Parse(time.RFC3339, row[3]); !strings.HasPrefix(row[1], "tfe_") || row[2] != "" || err != nil {
			t.Errorf("CSV row %q", row)
		}
		secrets[row[1]] = true
	}
	if len(secrets) != 3 || errOut != "tokenfleetctl: "+fpLine+warning {
		t.Errorf("secrets %v, stderr %q", secrets, errOut)
	}

	// --out: a new file of mode 0600, never an existing one; a refusal creates nothing.
	file := filepath.Join(t.TempDir(), "codes.csv")
	out, errOut = admin.ok("enrolment-key", "create", "--kind", "code", "--agent-id", "alice@ts-01", "--expires-in", "21d",
		"--csv", "--out", file)
	if out != "activation code "+strings.SplitN(readCSV(t, file)[1][0], ",", 2)[0]+" written to "+file+
		" (mode 0600): the coordinator does not show the secrets again\n"+fpLine || errOut != "" {
		t.Errorf("create --out printed %q, stderr %q", out, errOut)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("--out file: %v %v", st, err)
	}
	if row := readCSV(t, file)[1]; row[2] != "alice@ts-01" {
		t.Errorf("--out CSV row %q", row)
	}
	before := listIDs(t, admin)
	admin.fails(1, "--out "+file+" exists: it is not overwritten", "enrolment-key", "create", "--kind", "code", "--csv", "--out", file)
	// A refused creation leaves no empty file behind.
	empty := filepath.Join(t.TempDir(), "none.csv")
	admin.fails(1, "bad_request: max_uses: a one-off code is used once", "enrolment-key", "create", "--kind", "code", "--max-uses", "5", "--out", empty)
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("a refused creation left %s: %v", empty, err)
	}
	if after := listIDs(t, admin); len(after) != len(before) {
		t.Errorf("refused creations created codes: %v, then %v", before, after)
	}

	// What --expires-in asked for: the coordinator's clock is not the test's.
	for _, k := range listKeys(t, admin) {
		want := map[string]time.Duration{"key": 7 * 24 * time.Hour, "": 15 * time.Minute, "alice@ts-01": 21 * 24 * time.Hour}[k.AgentID+map[string]string{"key": "key"}[k.Kind]]
		if got := k.Expires.Sub(k.Created); got.Round(time.Second) != want {
			t.Errorf("%s %s (agent %q) valid for %v, want %v", k.Kind, k.ID, k.AgentID, got, want)
		}
	}

	// --json: the API's answer with the fingerprint.
	out, _ = admin.ok("enrolment-key", "create", "--kind", "code", "--json")
	var created struct {
		Items    []client.EnrolmentKey `json:"items"`
		CASHA256 string                `json:"ca_sha256"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || len(created.Items) != 1 || created.Items[0].Secret == "" || created.CASHA256 != fp {
		t.Errorf("create --json: %v\n%s", err, out)
	}

	// The coordinator's refusals, one line each.
	for _, tt := range []struct {
		want string
		args []string
	}{
		{"bad_request: count: one reusable key enrols many agents", []string{"--kind", "key", "--count", "2"}},
		{"bad_request: expires_in: is 720h0m0s; a one-off code is valid at most", []string{"--kind", "code", "--expires-in", "30d"}},
		{"bad_request: kind: is \"token\": want code", []string{"--kind", "token"}},
		{"bad_request: organization: no organisation named \"globex\"", []string{"--kind", "key", "--org", "globex"}},
		{"bad_request: tags: tag \"no spaces\"", []string{"--kind", "key", "--tag", "no spaces"}},
		{"bad_request: agent_id: a reusable key enrols many agents", []string{"--kind", "key", "--agent-id", "ws-01"}},
	} {
		admin.fails(1, "tokenfleetctl: enrolment-key create: "+tt.want, append([]string{"enrolment-key", "create"}, tt.args...)...)
	}

	// Listing: every code and key, without secrets; filters.
	out, _ = admin.ok("enrolment-key", "list")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 7 || !regexp.MustCompile(`^ID +KIND +NAME +ORG +TAGS +AGENT +APPROVAL +USES +EXPIRES +CREATED BY +STATUS$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^`+keyID+` +key +paris laptops +acme +laptop,site:paris +- +admin +0/10 +`+anyTime+` +admin +usable$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^\S+ +code +- +- +- +- +pre-approved +0/1 +`+anyTime+` +admin +usable$`).MatchString(lines[2]) ||
		strings.Contains(out, "tfe_") {
		t.Errorf("enrolment-key list:\n%s", out)
	}
	if out, _ := admin.ok("enrolment-key", "list", "--kind", "key"); strings.Count(out, "\n") != 2 {
		t.Errorf("list --kind key:\n%s", out)
	}

	// Revoked: no longer usable, shown as such.
	out, _ = admin.ok("enrolment-key", "revoke", keyID, "--reason", "posted in a chat")
	if !regexp.MustCompile(`^enrolment key ` + keyID + ` revoked at 20\d\d-\S+Z \(uses 0/10\)\n$`).MatchString(out) {
		t.Errorf("revoke printed %q", out)
	}
	if out, _ := admin.ok("enrolment-key", "list", "--kind", "key"); !regexp.MustCompile(` revoked 20\d\d-\S+Z\n$`).MatchString(out) {
		t.Errorf("list after revoke:\n%s", out)
	}
	if out, _ := admin.ok("enrolment-key", "list", "--kind", "key", "--usable"); out != "no enrolment keys and codes\n" {
		t.Errorf("list --usable after revoke: %q", out)
	}
	if out, _ := admin.ok("enrolment-key", "list", "--usable", "--json"); strings.Contains(out, keyID) || !strings.HasPrefix(out, "[") {
		t.Errorf("list --usable --json:\n%s", out)
	}
	admin.fails(1, "tokenfleetctl: enrolment-key revoke: not_found: no enrolment key or code \"nope\"", "enrolment-key", "revoke", "nope")
}

// anyTime is an expiry as listings show it, the coordinator's clock being the machine's.
const anyTime = `20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ \((in \S+|\S+ ago)\)`

// listKeys lists every code and key with --json.
func listKeys(t *testing.T, admin ctlRun) []client.EnrolmentKey {
	t.Helper()
	out, _ := admin.ok("enrolment-key", "list", "--all", "--json")
	var ks []client.EnrolmentKey
	if err := json.Unmarshal([]byte(out), &ks); err != nil {
		t.Fatal(err)
	}
	return ks
}

// listIDs lists the IDs of every code and key.
func listIDs(t *testing.T, admin ctlRun) []string {
	t.Helper()
	ks := listKeys(t, admin)
	ids := make([]string, len(ks))
	for i, k := range ks {
		ids[i] = k.ID
	}
	return ids
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("%s: %v %q", path, err, rows)
	}
	return rows
}

// TestAgentLifeCycleWithoutManagement drives the agent commands against a coordinator
// without broker management: disable and remove work; approve, enable and rotating
// credentials, which provision a broker user, answer unavailable, saying why.
func TestAgentLifeCycleWithoutManagement(t *testing.T) {
	t.Parallel()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	inst.EnrolAgent(t, "ws-01", "ws-01.acme.example")
	err := inst.Store.InTx(context.Background(), func(tx store.Tx) error {
		_, err := tx.CreateAgent(context.Background(), store.Agent{ID: "ws-02", Hostname: "ws-02.acme.example", OS: "linux",
			Version: "test", State: store.AgentPending, StateReason: "waiting for an administrator's approval", Tags: []string{"site:paris"}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	admin := ctlRun{t, map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": inst.AdminToken}}

	out, _ := admin.ok("agents")
	if !regexp.MustCompile(`(?m)^ws-01 +ws-01\.acme\.example +linux +test +active +offline +- +- +\S+$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ws-02 +ws-02\.acme\.example +linux +test +pending +offline +- +site:paris +\S+$`).MatchString(out) {
		t.Errorf("agents:\n%s", out)
	}
	if out, _ := admin.ok("agents", "--pending"); strings.Contains(out, "ws-01") || !strings.Contains(out, "ws-02") {
		t.Errorf("agents --pending:\n%s", out)
	}
	if out, _ := admin.ok("agents", "--state", "disabled"); out != "no agents\n" {
		t.Errorf("agents --state disabled: %q", out)
	}
	admin.fails(1, "tokenfleetctl: agents: bad_request: state: is \"gone\": want pending, active, disabled or removed", "agents", "--state", "gone")

	const noManagement = "unavailable: the coordinator has no broker management configured (broker.management)"
	admin.fails(1, "tokenfleetctl: agent approve: unavailable: cannot approve agent ws-02: the coordinator has no broker management configured (broker.management)", "agent", "approve", "ws-02", "--reason", "known laptop")
	admin.fails(1, "tokenfleetctl: agent disable: reason_required: say why the agent is disabled", "agent", "disable", "ws-01")
	admin.fails(1, "; pass --reason R", "agent", "remove", "ws-01")
	admin.fails(1, "tokenfleetctl: agent reject: conflict: cannot reject agent: agent ws-01 is active", "agent", "reject", "ws-01")
	admin.fails(1, "tokenfleetctl: agent rotate-credentials: "+noManagement, "agent", "rotate-credentials", "ws-01")

	if out, _ := admin.ok("agent", "disable", "ws-01", "--reason", "laptop stolen"); out != "agent ws-01 disabled: state disabled\n" {
		t.Errorf("agent disable printed %q", out)
	}
	admin.fails(1, "conflict: agent ws-01 is disabled: only an active agent has broker credentials to rotate", "agent", "rotate-credentials", "ws-01")
	// Without broker management nothing deleted its hand-made broker user: enabling
	// gives it back its state only.
	if out, _ := admin.ok("agent", "enable", "ws-01", "--reason", "found"); out != "agent ws-01 enabled: state active\n" {
		t.Errorf("agent enable printed %q", out)
	}
	admin.ok("agent", "disable", "ws-01", "--reason", "laptop stolen again")
	out, _ = admin.ok("agent", "remove", "ws-01", "--reason", "decommissioned", "--json")
	var a client.Agent
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.ID != "ws-01" || a.State != "removed" || a.StateReason != "decommissioned" || a.StateBy == "" {
		t.Errorf("agent remove --json: %v %+v", err, a)
	}
	admin.fails(1, "tokenfleetctl: agent reject: not_found: no agent \"ws-09\" is enrolled", "agent", "reject", "ws-09")
}

// TestEnrolmentCommandLines: wrong command lines are usage errors, and send nothing.
func TestEnrolmentCommandLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"enrolment-key", "create"}, "--kind is required: code (one-off activation codes) or key"},
		{[]string{"enrolment-key", "create", "--kind", "code", "--csv", "--json"}, "pass --csv or --json, not both"},
		{[]string{"enrolment-key", "create", "--kind", "code", "--count", "0"}, "--count must be at least 1"},
		{[]string{"enrolment-key", "create", "--kind", "code", "--expires-in", "soon"}, `--expires-in: duration "soon"`},
		{[]string{"enrolment-key", "create", "--kind", "code", "--expires-in", "0d"}, "--expires-in must be positive"},
		{[]string{"enrolment-key", "create", "extra", "--kind", "code"}, `takes no arguments, got "extra"`},
		{[]string{"enrolment-key", "revoke"}, "want ID, got 0 argument(s)"},
		{[]string{"enrolment-key", "list", "--limit", "0"}, "--limit must be at least 1"},
		{[]string{"agents", "--pending", "--state", "active"}, "--pending is --state pending: pass one of them"},
		{[]string{"agent", "approve"}, "want ID, got 0 argument(s)"},
		{[]string{"agent", "disable", " ", "--reason", "r"}, "ID is empty"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			api := newFakeAPI(t)
			r := runCtl(t, api.env(), "", tt.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "--help)") {
				t.Errorf("exit %d stderr %q, want exit 2 and %q", r.code, r.stderr, tt.want)
			}
			oneLine(t, "stderr", r.stderr)
			if n := len(api.requests()); n != 0 {
				t.Errorf("%d requests sent for a wrong command line", n)
			}
		})
	}
}

// TestEnrolmentKeyFingerprintOverTLS: over https the fingerprint printed is that of the
// highest CA of the chain ctl verified that the coordinator presents: the certificate an
// agent's TLS connection to the same URL must hold and chain to (not the coordinator's
// issuing CA, which signs holders' certificates).
func TestEnrolmentKeyFingerprintOverTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	for _, tt := range []struct {
		name      string
		presented [][]byte // DER, the leaf first
		trusted   [][]byte // --ca-file
		pinned    []byte
		warning   string
	}{
		{"leaf and intermediate", [][]byte{pki.leaf, pki.inter}, [][]byte{pki.root}, pki.inter, ""},
		{"the whole chain", [][]byte{pki.leaf, pki.inter, pki.root}, [][]byte{pki.root}, pki.root, ""},
		{"the leaf alone", [][]byte{pki.leaf}, [][]byte{pki.root, pki.inter}, pki.leaf,
			"tokenfleetctl: warning: the coordinator presents its own certificate without the CA's"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			expires := fixedNow.Add(15 * time.Minute)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.Method + " " + r.URL.Path {
				case "GET /api/v1/ca/certificate":
					writeJSON(w, 200, client.CAChain{PEM: "-", Certificates: []client.CACertificate{{Subject: "CN=Issuing CA", SHA256: strings.Repeat("ab", 32)}}})
				case "POST /api/v1/enrolment-keys":
					writeJSON(w, 201, client.EnrolmentKeys{Items: []client.EnrolmentKey{{ID: "ek1", Kind: "code", MaxUses: 1, Expires: expires, Secret: "tfe_secret"}}})
				default:
					apiError(w, 404, "not_found", r.URL.Path)
				}
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: tt.presented, PrivateKey: pki.leafKey}}}
			srv.StartTLS()
			t.Cleanup(srv.Close)
			var (
				trusted []byte
				err     error
			)
			for _, der := range tt.trusted {
				trusted = append(trusted, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
			}
			ca := filepath.Join(t.TempDir(), "ca.pem")
			if err = os.WriteFile(ca, trusted, 0o600); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(tt.pinned)
			r := runCtl(t, map[string]string{"TOKENFLEET_URL": srv.URL, "TOKENFLEET_TOKEN": "t"}, "", "--ca-file", ca, "enrolment-key", "create", "--kind", "code")
			want := "activation code ek1 created (agents wait for approval)\n" +
				"ID   SECRET      AGENT  EXPIRES\n" +
				"ek1  tfe_secret  -      2025-06-01T12:15:00Z (in 15m)\n" +
				"CA fingerprint (SHA-256): " + hex.EncodeToString(sum[:]) + " (tokenfleet-agent enrol --ca-fingerprint)\n"
			if r.code != 0 || r.stdout != want || !strings.HasPrefix(r.stderr, tt.warning) {
				t.Errorf("exit %d stderr %q stdout:\n%s\nwant:\n%s", r.code, r.stderr, r.stdout, want)
			}
			// What the agent checks: the pinned certificate is among those presented, and
			// vouches, as the only root, for the leaf.
			presented := make([]*x509.Certificate, len(tt.presented))
			inter := x509.NewCertPool()
			for i, der := range tt.presented {
				if presented[i], err = x509.ParseCertificate(der); err != nil {
					t.Fatal(err)
				}
				if i > 0 {
					inter.AddCert(presented[i])
				}
			}
			roots := x509.NewCertPool()
			for _, c := range presented {
				if sha256.Sum256(c.Raw) == sum {
					roots.AddCert(c)
				}
			}
			if _, err := presented[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "127.0.0.1"}); err != nil {
				t.Errorf("an agent pinning the fingerprint cannot verify the coordinator: %v", err)
			}
		})
	}
}

// testPKI is a root CA, an intermediate CA it signed, and a leaf for 127.0.0.1 the
// intermediate signed.
type testPKI struct {
	root, inter, leaf []byte // DER
	leafKey           *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	issue := func(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return der, cert, key
	}
	now := time.Now()
	ca := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	rootDER, root, rootKey := issue(ca(1, "Test Root"), nil, nil)
	interDER, inter, interKey := issue(ca(2, "Test Intermediate"), root, rootKey)
	leafDER, _, leafKey := issue(&x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "coordinator"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, inter, interKey)
	return testPKI{root: rootDER, inter: interDER, leaf: leafDER, leafKey: leafKey}
}
