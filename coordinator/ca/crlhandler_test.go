package ca_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
)

// crlSource signs CRLs with a throwaway CA; number and validity are set by the test. Its
// thisUpdate moves only when the test sets something, as a CA's does only when it signs a
// new CRL: a second ticking between two requests is not a new CRL.
type crlSource struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey

	mu     sync.Mutex
	number int64
	valid  time.Duration
	fail   error
	this   time.Time
}

func newCRLSource() *crlSource {
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "handler test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	return &crlSource{cert: must(x509.ParseCertificate(der)), key: key, number: 1, valid: 24 * time.Hour,
		this: time.Now().Truncate(time.Second)}
}

func (s *crlSource) CRL(context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(s.number), ThisUpdate: s.this, NextUpdate: s.this.Add(s.valid),
	}, s.cert, s.key)
}

func (s *crlSource) set(f func(s *crlSource)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
	s.this = time.Now().Truncate(time.Second)
}

func TestCRLHandler(t *testing.T) {
	src := newCRLSource()
	srv := httptest.NewServer(ca.CRLHandler(src, zerolog.New(zerolog.NewTestWriter(t))))
	defer srv.Close()

	// reply is what the tests read of a response, taken before its body is closed.
	type reply struct {
		StatusCode int
		Status     string
		Header     http.Header
	}
	do := func(method string, header map[string]string) (reply, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(context.Background(), method, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if cerr := resp.Body.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		return reply{resp.StatusCode, resp.Status, resp.Header}, body
	}

	resp, body := do(http.MethodGet, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != ca.CRLContentType {
		t.Errorf("Content-Type %q", ct)
	}
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		t.Fatalf("body is not a DER CRL: %v", err)
	}
	if err := crl.CheckSignatureFrom(src.cert); err != nil {
		t.Errorf("CRL signature: %v", err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Errorf("Cache-Control %q", cc)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}

	resp, body = do(http.MethodHead, nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Content-Length") == "" {
		t.Errorf("HEAD: %s, %d body bytes, length %q", resp.Status, len(body), resp.Header.Get("Content-Length"))
	}

	resp, _ = do(http.MethodGet, map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET of the same CRL: %s", resp.Status)
	}

	// A new CRL (new number) is served in full to the same conditional request.
	src.set(func(s *crlSource) { s.number = 2; s.valid = time.Minute })
	resp, body = do(http.MethodGet, map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag {
		t.Fatalf("new CRL: %s, ETag %q", resp.Status, resp.Header.Get("ETag"))
	}
	if crl, err := x509.ParseRevocationList(body); err != nil || crl.Number.Int64() != 2 {
		t.Fatalf("new CRL: %v", err)
	}
	// Caches may not keep it past its nextUpdate.
	age, err := strconv.Atoi(strings.TrimPrefix(resp.Header.Get("Cache-Control"), "public, max-age="))
	if err != nil || age > 60 {
		t.Errorf("Cache-Control %q for a CRL valid one minute", resp.Header.Get("Cache-Control"))
	}

	resp, _ = do(http.MethodPost, nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Errorf("POST: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}

	src.set(func(s *crlSource) { s.fail = errors.New("store down") })
	resp, body = do(http.MethodGet, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || bytes.Contains(body, []byte("store down")) {
		t.Errorf("failing source: %s %q", resp.Status, body)
	}
}
