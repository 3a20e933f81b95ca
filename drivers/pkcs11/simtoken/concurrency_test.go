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
