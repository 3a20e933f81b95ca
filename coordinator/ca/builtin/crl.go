package builtin

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
)

// CRLNumberFileName holds the last CRL number, in decimal, in the data directory.
const CRLNumberFileName = "crl-number"

// fileNumberer keeps the CRL number in a file, so that it keeps growing across restarts.
type fileNumberer struct {
	path string

	mu sync.Mutex // serialises read-increment-write of the file
}

func (f *fileNumberer) NextCRLNumber(ctx context.Context) (*big.Int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	last := new(big.Int)
	data, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if _, ok := last.SetString(strings.TrimSpace(string(data)), 10); !ok || last.Sign() < 0 {
			// Starting again from 1 would publish CRLs that relying parties take as
			// older than the one they hold.
			return nil, ca.Errorf(ca.CodeConfig, "%s holds %q, not a CRL number; fix or remove it only with a number above the last published", f.path, strings.TrimSpace(string(data)))
		}
	}
	next := last.Add(last, big.NewInt(1))
	if err := replaceFile(f.path, []byte(next.String()+"\n")); err != nil {
		return nil, err
	}
	return next, nil
}

// replaceFile writes path atomically: a crash leaves the old content or the new.
func replaceFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone already after a rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// cachedCRL is the last CRL made.
type cachedCRL struct {
	der        []byte
	thisUpdate time.Time
	nextUpdate time.Time
}

// CRL implements ca.CRLSource: the cached CRL while it is younger than CRLRefresh and no
// revocation happened since, else a new one.
func (c *CA) CRL(ctx context.Context) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if cur := c.crl; cur != nil && !c.crlStale && now.Before(cur.thisUpdate.Add(c.cfg.crlRefresh)) && now.Before(cur.nextUpdate) {
		return bytes.Clone(cur.der), nil
	}
	cur, err := c.makeCRLLocked(ctx, now)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(cur.der), nil
}

// makeCRLLocked makes, signs and caches a new CRL; the caller holds c.mu, which keeps CRL
// numbers in the order of the CRLs.
func (c *CA) makeCRLLocked(ctx context.Context, now time.Time) (*cachedCRL, error) {
	revoked, err := c.revs.Revoked(ctx)
	if err != nil {
		return nil, ca.Errorf(codeOr(ca.CodeUnavailable, err), "read the revocation list: %w", err)
	}
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, r := range revoked {
		// An expired certificate fails validation anyway; dropping it keeps the CRL
		// from growing forever (RFC 5280, 3.3).
		if !r.NotAfter.IsZero() && r.NotAfter.Before(now) {
			continue
		}
		entries = append(entries, x509.RevocationListEntry{
			SerialNumber:   r.Serial,
			RevocationTime: r.RevokedAt,
			ReasonCode:     r.Reason, // 0 (unspecified) is left out, as RFC 5280 asks
		})
	}
	number, err := c.numbers.NextCRLNumber(ctx)
	if err != nil {
		return nil, ca.Errorf(codeOr(ca.CodeUnavailable, err), "next CRL number: %w", err)
	}
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(c.cfg.crlValidity),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, c.auth.cert, c.auth.signer)
	if err != nil {
		return nil, ca.Errorf(ca.CodeUnavailable, "sign the CRL: %w", err)
	}
	cur := &cachedCRL{der: der, thisUpdate: now, nextUpdate: tmpl.NextUpdate}
	c.crl, c.crlStale = cur, false
	c.log.Info().Str("crl_number", number.String()).Int("entries", len(entries)).
		Time("next_update", tmpl.NextUpdate).Msg("CRL signed")
	return cur, nil
}

// codeOr is the code of the *ca.Error in err's chain, or fallback when there is none.
func codeOr(fallback ca.Code, err error) ca.Code {
	var ce *ca.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return fallback
}
