package ca

import (
	"bytes"
	"crypto/x509"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// CRLContentType is the media type of a DER CRL (RFC 2585).
const CRLContentType = "application/pkix-crl"

// crlMaxAge bounds how long HTTP caches may keep a CRL: a revocation reaches clients
// behind a cache within this time, while a busy fleet still fetches from a cache.
const crlMaxAge = 5 * time.Minute

// CRLHandler serves src's current CRL, DER encoded, to GET and HEAD requests. It answers
// conditional requests by the CRL number (ETag), lets caches keep the CRL for at most a
// few minutes and never past its nextUpdate, and answers 503 when the CRL cannot be
// made (a relying party must then treat revocation status as unknown, not as good).
func CRLHandler(src CRLSource, log zerolog.Logger) http.Handler {
	return &crlHandler{src: src, log: log, now: time.Now}
}

type crlHandler struct {
	src CRLSource
	log zerolog.Logger
	now func() time.Time

	mu   sync.Mutex // guards the fields below: the last CRL parsed, to parse each one once
	der  []byte
	etag string
	next time.Time
}

func (h *crlHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	der, err := h.src.CRL(r.Context())
	if err != nil {
		h.log.Error().Err(err).Msg("CRL unavailable")
		http.Error(w, "CRL unavailable", http.StatusServiceUnavailable)
		return
	}
	etag, next, err := h.describe(der)
	if err != nil {
		h.log.Error().Err(err).Msg("CRL source returned an unreadable CRL")
		http.Error(w, "CRL unavailable", http.StatusServiceUnavailable)
		return
	}
	maxAge := min(crlMaxAge, next.Sub(h.now()))
	w.Header().Set("Content-Type", CRLContentType)
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(max(0, int(maxAge/time.Second))))
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(der))
}

// describe returns the ETag (from the CRL number) and nextUpdate of der.
func (h *crlHandler) describe(der []byte) (string, time.Time, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if bytes.Equal(der, h.der) {
		return h.etag, h.next, nil
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return "", time.Time{}, err
	}
	etag := `"`
	if crl.Number != nil {
		etag += crl.Number.Text(16)
	}
	etag += "-" + strconv.FormatInt(crl.ThisUpdate.Unix(), 16) + `"`
	h.der, h.etag, h.next = der, etag, crl.NextUpdate
	return etag, crl.NextUpdate, nil
}
