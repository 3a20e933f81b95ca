//go:build cgo

package simtoken_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// Many tokens of one backend issued at once through one module, while another token is
// pulled out and put back again and again and the slots are listed: every issuance ends
// well, and the race detector sees nothing.
func TestConcurrentIssuance(t *testing.T) {
	const tokens = 24
	ctx := context.Background()
	b := newBackend(t, simtoken.Options{Profile: simtoken.Instant})
	for i := range tokens {
		addToken(t, b, simtoken.TokenSpec{Serial: fmt.Sprintf("SIM%04d", i), SOPIN: soPIN, Label: fmt.Sprintf("t%d", i), UserPIN: userPIN})
	}
	addToken(t, b, simtoken.TokenSpec{Serial: "FLAKY", SOPIN: soPIN, Label: "flaky", UserPIN: userPIN})
	mod := open(t, b)
	ca, err := testenv.NewCA("simtoken test CA")
	if err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Add(1)
	go func() {
		defer churn.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = b.Remove("FLAKY")
			if _, err := mod.Slots(ctx); err != nil {
				t.Errorf("slots: %v", err)
				return
			}
			_ = b.Insert("FLAKY")
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, tokens+1)
	for i := range tokens + 1 {
		serial := fmt.Sprintf("SIM%04d", i)
		if i == tokens {
			serial = "FLAKY"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := issue(ctx, mod, ca, serial)
			if serial == "FLAKY" {
				// Pulled out at any moment: whatever it says must be one of these.
				switch pkcs11.CodeOf(err) {
				case "", pkcs11.CodeDeviceRemoved, pkcs11.CodeNotPresent, pkcs11.CodeNotLoggedIn, pkcs11.CodeNotFound, pkcs11.CodeSessionError:
					return
				}
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", serial, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	churn.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// issue is the token part of an issue job.
func issue(ctx context.Context, mod *pkcs11.Module, ca *testenv.CA, serial string) error {
	tok, err := mod.FindToken(ctx, uriSerial(serial))
	if err != nil {
		return err
	}
	defer func() { _ = tok.Close() }()
	if err := tok.Login(ctx, userPIN); err != nil {
		return err
	}
	id := []byte("job-" + serial)
	key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "signing", Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: serial}}, key)
	if err != nil {
		return err
	}
	certDER, err := ca.Sign(der, serial)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return err
	}
	if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "signing", Cert: cert}); err != nil {
		return err
	}
	return tok.VerifyKeyAndCertificate(ctx, id)
}

func uriSerial(serial string) *uri.URI { return &uri.URI{Serial: serial} }

// overlaps stands in front of a module and counts the calls on a token's sessions that
// reach the backend while another call on that token is still in it.
type overlaps struct {
	mu       sync.Mutex // guards the fields below
	inFlight map[uint]int
	slots    map[p11.SessionHandle]uint
	count    int
	calls    int
}

func (o *overlaps) Wrap(b pkcs11.Backend) pkcs11.Backend { return &watched{Backend: b, o: o} }

func (o *overlaps) enter(sh p11.SessionHandle) func() {
	o.mu.Lock()
	defer o.mu.Unlock()
	slot, ok := o.slots[sh]
	if !ok {
		return func() {}
	}
	o.calls++
	if o.inFlight[slot] > 0 {
		o.count++
	}
	o.inFlight[slot]++
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.inFlight[slot]--
	}
}

type watched struct {
	pkcs11.Backend
	o *overlaps
}

func (w *watched) OpenSession(slotID uint, flags uint) (p11.SessionHandle, error) {
	sh, err := w.Backend.OpenSession(slotID, flags)
	if err == nil {
		w.o.mu.Lock()
		w.o.slots[sh] = slotID
		w.o.mu.Unlock()
	}
	return sh, err
}

func (w *watched) SignInit(sh p11.SessionHandle, m []*p11.Mechanism, h p11.ObjectHandle) error {
	defer w.o.enter(sh)()
	return w.Backend.SignInit(sh, m, h)
}

func (w *watched) Sign(sh p11.SessionHandle, msg []byte) ([]byte, error) {
	defer w.o.enter(sh)()
	return w.Backend.Sign(sh, msg)
}

func (w *watched) FindObjectsInit(sh p11.SessionHandle, t []*p11.Attribute) error {
	defer w.o.enter(sh)()
	return w.Backend.FindObjectsInit(sh, t)
}

// Modules opened over one backend share it as modules of one library file do: the calls
// of an agent's executor and of its inventory scan on one token take turns.
func TestModulesOverOneBackendTakeTurns(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, simtoken.Options{})
	addToken(t, b, simtoken.TokenSpec{Serial: "SIM0001", SOPIN: soPIN, Label: "a", UserPIN: userPIN})
	watch := &overlaps{inFlight: map[uint]int{}, slots: map[p11.SessionHandle]uint{}}
	var (
		keys []*pkcs11.Key
		mods []*pkcs11.Module
	)
	for i := range 2 {
		mod, err := pkcs11.OpenBackend("simtoken", b, pkcs11.Options{Wrap: watch.Wrap})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mod.Close() })
		mods = append(mods, mod)
		tok := findToken(t, mod, "SIM0001")
		if err := tok.Login(ctx, userPIN); err != nil {
			t.Fatal(err)
		}
		key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{byte(i)}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	var wg sync.WaitGroup
	digest := make([]byte, 32)
	for _, key := range keys {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 40 {
					if _, err := key.SignContext(ctx, digest, nil); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	watch.mu.Lock()
	if watch.calls < 2*3*40*2 || watch.count != 0 {
		t.Errorf("%d of %d calls on the token overlapped another", watch.count, watch.calls)
	}
	watch.mu.Unlock()
	// Closing one module leaves the other working.
	if err := mods[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := keys[1].SignContext(ctx, digest, nil); err != nil {
		t.Fatalf("sign through the module left open: %v", err)
	}
	_, err := keys[0].SignContext(ctx, digest, nil)
	wantCode(t, err, pkcs11.CodeGeneralError) // its module is closed
}
