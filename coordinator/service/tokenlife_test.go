package service_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	_ "github.com/tokenfleet/tokenfleet/coordinator/ca/builtin" // the built-in CA, registered
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// lifeEnv is a service on a store with the built-in CA behind the dispatcher's revocation
// seams (the dispatcher is not run: no broker is needed to revoke), an administrator, a
// help-desk operator, an approver and a holder.
type lifeEnv struct {
	s     *service.Service
	st    store.Store
	ca    ca.CA
	dir   string
	admin service.Actor
	desk  service.Actor
	boss  service.Actor
	alice store.User
}

func newLifeEnv(t *testing.T, cfg store.Config) *lifeEnv {
	t.Helper()
	ctx := t.Context()
	r := newDispatchRig(t, cfg)
	st, authority, d, dir, log := r.st, r.ca, r.d, r.dir, r.log
	s, err := service.New(service.Options{Store: st, Logger: log, Issuer: d})
	if err != nil {
		t.Fatal(err)
	}
	e := &lifeEnv{s: s, st: st, ca: authority, dir: dir, admin: bootstrapAdmin(t, s, st)}
	if _, err := s.CreateOrganization(ctx, e.admin, "acme"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []service.UserRequest{
		{Username: "olga", Organization: "acme", Roles: []jobs.Role{jobs.RoleHelpdesk}},
		{Username: "arne", Organization: "acme", Roles: []jobs.Role{jobs.RoleApprover}},
		{Username: "alice", DisplayName: "Alice Holder", Organization: "acme"},
	} {
		if _, err := s.CreateUser(ctx, e.admin, u); err != nil {
			t.Fatal(err)
		}
	}
	e.desk, e.boss = e.actor(t, "olga"), e.actor(t, "arne")
	if e.alice, err = st.GetUserByUsername(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	pem := authority.CACertificates()[0]
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), pemOf("CERTIFICATE", pem.Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *lifeEnv) actor(t *testing.T, name string) service.Actor {
	t.Helper()
	return actorNamed(t, e.st, name)
}

// certify has the CA sign a certificate for alice and records it on token serial.
func (e *lifeEnv) certify(t *testing.T, serial string) store.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.ca.Sign(t.Context(), ca.SignRequest{PublicKey: k.Public(), Identity: profile.Identity{Subject: pkix.Name{CommonName: "Alice Holder"}},
		Usages: profile.Usages{KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, Validity: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var out store.Certificate
	err = e.st.InTx(t.Context(), func(tx store.Tx) error {
		out, err = tx.AddCertificate(t.Context(), store.Certificate{Serial: c.SerialNumber.Text(16), HolderID: e.alice.ID, TokenSerial: serial,
			Subject: c.Subject.String(), Issuer: c.Issuer.String(), NotBefore: c.NotBefore, NotAfter: c.NotAfter, DER: c.Raw})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// crlReasons reads the CA's CRL with openssl (checked against the CA certificate) and
// returns the reason text of each serial it lists, by upper-case hex serial.
func (e *lifeEnv) crlReasons(t *testing.T) map[string]string {
	t.Helper()
	der, err := e.ca.(ca.CRLSource).CRL(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(e.dir, "crl-*.pem")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(pemOf("X509 CRL", der)); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	cmd := exec.Command("openssl", "crl", "-in", filepath.Base(f.Name()), "-noout", "-text", "-CAfile", "ca.pem")
	cmd.Dir = e.dir
	b, err := cmd.CombinedOutput()
	text := string(b)
	if err != nil || !strings.Contains(text, "verify OK") {
		t.Fatalf("openssl crl (install it with apt-get install openssl): %v\n%s", err, text)
	}
	out := map[string]string{}
	for _, part := range strings.Split(text, "Serial Number: ")[1:] {
		lines := strings.Split(part, "\n")
		reason := ""
		for i, l := range lines {
			if strings.Contains(l, "CRL Reason Code") && i+1 < len(lines) {
				reason = strings.TrimSpace(lines[i+1])
			}
		}
		out[strings.TrimSpace(lines[0])] = reason
	}
	return out
}

func hexSerial(c store.Certificate) string { return strings.ToUpper(evenHex(c.Serial)) }

// evenHex pads a hex serial to whole bytes, as openssl prints it.
func evenHex(s string) string {
	if len(s)%2 == 1 {
		return "0" + s
	}
	return s
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// paths reach each state from active through the help desk's moves.
var paths = map[tokenlife.State][]tokenlife.State{
	tokenlife.Active:    nil,
	tokenlife.Suspended: {tokenlife.Suspended},
	tokenlife.Lost:      {tokenlife.Lost},
	tokenlife.Stolen:    {tokenlife.Stolen},
	tokenlife.Damaged:   {tokenlife.Damaged},
	tokenlife.Retired:   {tokenlife.Retired},
	tokenlife.Found:     {tokenlife.Lost, tokenlife.Found},
}

// wantCRL is the CRL reason openssl prints for a certificate of a token in each state
// ("" : not listed).
var wantCRL = map[tokenlife.State]string{
	tokenlife.Active:    "",
	tokenlife.Suspended: "Certificate Hold",
	tokenlife.Lost:      "Key Compromise",
	tokenlife.Stolen:    "Key Compromise",
	tokenlife.Damaged:   "Cessation Of Operation",
	tokenlife.Retired:   "Cessation Of Operation",
	tokenlife.Found:     "Key Compromise", // finding a lost token does not undo the revocation
}

// TestSetTokenStateEveryPair moves a token with a valid certificate from each state the
// help desk can reach to every state, on SQLite and PostgreSQL: an allowed move changes
// the state, records the history, audits it and leaves the certificate in the CRL as
// tokenlife says (checked with openssl); a refused one changes nothing.
func TestSetTokenStateEveryPair(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		e := newLifeEnv(t, cfg)
		ctx := t.Context()
		n := 0
		for from, path := range paths {
			for _, to := range tokenlife.States() {
				n++
				serial := fmt.Sprintf("T%02d", n)
				cert := e.certify(t, serial)
				for _, s := range path {
					if _, err := e.s.SetTokenState(ctx, e.desk, serial, s, "setting up"); err != nil {
						t.Fatalf("%s: to %s: %v", serial, s, err)
					}
				}
				_, err := e.s.SetTokenState(ctx, e.desk, serial, to, fmt.Sprintf("%s to %s", from, to))
				_, legal := tokenlife.Check(from, to)
				got := e.crlReasons(t)[hexSerial(cert)]
				l, rerr := e.s.GetTokenLife(ctx, e.desk, serial)
				if rerr != nil {
					t.Fatal(rerr)
				}
				switch {
				case to == tokenlife.Replaced:
					if service.AsError(err).Code != service.CodeBadRequest || l.State != from {
						t.Errorf("%s -> replaced directly: %v, now %s", from, err, l.State)
					}
				case legal != nil:
					if service.AsError(err).Code != service.CodeIllegalTransition || l.State != from || got != wantCRL[from] {
						t.Errorf("%s -> %s: %v; now %s, CRL %q", from, to, err, l.State, got)
					}
				default:
					want := wantCRL[to]
					if wantCRL[from] == "Key Compromise" { // revoked for good: a later move keeps the reason
						want = "Key Compromise"
					}
					if from == tokenlife.Damaged && to == tokenlife.Retired {
						want = "Cessation Of Operation"
					}
					if err != nil || l.State != to || got != want || len(l.History) != len(path)+1 ||
						l.History[len(path)].Reason != fmt.Sprintf("%s to %s", from, to) || l.ChangedByName != "olga" || l.Holder != "alice" {
						t.Errorf("%s -> %s: %v; now %s, CRL %q (want %q), history %+v", from, to, err, l.State, got, want, l.History)
					}
				}
			}
		}
		// Every allowed move is audited with its from and to.
		var moves int
		for en, err := range e.st.AuditEntries(ctx, 1) {
			if err != nil {
				t.Fatal(err)
			}
			if en.Action == audit.ActionTokenStateChanged {
				moves++
			}
		}
		if moves == 0 {
			t.Error("no token.state_changed audit entry")
		}
	})
}

// TestTokenLifeRefusals: who may move a token, bad input, and a replaced token that
// nothing moves any more (a replacement of it is refused in the end-to-end test).
func TestTokenLifeRefusals(t *testing.T) {
	t.Parallel()
	e := newLifeEnv(t, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "s.db")})
	ctx := t.Context()
	e.certify(t, "R1")
	for _, tc := range []struct {
		name   string
		by     service.Actor
		serial string
		to     tokenlife.State
		reason string
		code   service.Code
	}{
		{"approver", e.boss, "R1", tokenlife.Lost, "gone", service.CodeForbidden},
		{"no reason", e.desk, "R1", tokenlife.Lost, "  ", service.CodeReasonRequired},
		{"unknown state", e.desk, "R1", "misplaced", "gone", service.CodeBadRequest},
		{"bad serial", e.desk, "R 1", tokenlife.Lost, "gone", service.CodeBadRequest},
		{"reinstate an active token", e.desk, "R1", tokenlife.Active, "fine", service.CodeIllegalTransition},
	} {
		_, err := e.s.SetTokenState(ctx, tc.by, tc.serial, tc.to, tc.reason)
		if got := service.AsError(err); got == nil || got.Code != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	// A replaced token is final: nothing moves it, nothing replaces it again.
	err := e.st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.SetTokenLife(ctx, store.TokenLife{Serial: "R2", State: tokenlife.Replaced, ChangedBy: "system:tokenlife"}, 0, store.TokenLifeEvent{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []tokenlife.State{tokenlife.Active, tokenlife.Suspended, tokenlife.Lost, tokenlife.Retired} {
		if _, err := e.s.SetTokenState(ctx, e.desk, "R2", to, "try"); service.AsError(err).Code != service.CodeIllegalTransition ||
			!strings.Contains(err.Error(), "final") {
			t.Errorf("replaced -> %s: %v", to, err)
		}
	}
}
