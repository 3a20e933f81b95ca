package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

type retryJSON struct {
	Reason   string `json:"reason"`
	Deadline string `json:"deadline"`
}

// retry starts a new attempt of a failed job.
func (a *api) retry(w http.ResponseWriter, r *http.Request, u store.User) {
	var in retryJSON
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	req := service.RetryRequest{Reason: in.Reason}
	if in.Deadline != "" {
		t, err := time.Parse(time.RFC3339, in.Deadline)
		if err != nil {
			a.fail(w, bad("deadline", "%q is not an RFC 3339 date-time such as 2026-01-31T18:00:00Z", in.Deadline))
			return
		}
		req.Deadline = t
	}
	d, err := a.svc.RetryJob(r.Context(), u, r.PathValue("id"), req)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, jobDetailOut(d))
}

type revokeJSON struct {
	Reason  string `json:"reason"`
	Comment string `json:"comment"`
}

// revokeCertificate revokes a certificate (admin or CA operator).
func (a *api) revokeCertificate(w http.ResponseWriter, r *http.Request, u store.User) {
	var in revokeJSON
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	if strings.TrimSpace(in.Reason) == "" {
		a.fail(w, bad("reason", "is required: one of %s", strings.Join(service.RevocationReasons(), ", ")))
		return
	}
	reason, err := service.ParseRevocationReason(in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	c, err := a.svc.RevokeCertificate(r.Context(), u, r.PathValue("serial"), reason, in.Comment)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, certificateOut(c))
}

type caCertificateJSON struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	SHA256    string    `json:"sha256"`
}

type caJSON struct {
	// PEM holds the certificates in PEM, the issuing CA first.
	PEM          string              `json:"pem"`
	Certificates []caCertificateJSON `json:"certificates"`
}

// caCertificate serves the CA's certificates to anyone: relying parties need them, and
// they are public.
func (a *api) caCertificate(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	certs, err := a.svc.CACertificates()
	if err != nil {
		a.fail(w, err)
		return
	}
	out := caJSON{Certificates: make([]caCertificateJSON, 0, len(certs))}
	var b strings.Builder
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // a strings.Builder does not fail
		sum := sha256.Sum256(c.Raw)
		out.Certificates = append(out.Certificates, caCertificateJSON{Subject: c.Subject.String(), Issuer: c.Issuer.String(),
			Serial: c.SerialNumber.Text(16), NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), SHA256: hex.EncodeToString(sum[:])})
	}
	out.PEM = b.String()
	writeJSON(w, http.StatusOK, out)
}

type agentKeyResetJSON struct {
	Reason string `json:"reason"`
}

// resetAgentKey forgets an agent's recorded seal key (admin).
func (a *api) resetAgentKey(w http.ResponseWriter, r *http.Request, u store.User) {
	var in agentKeyResetJSON
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	ag, err := a.svc.ResetAgentKey(r.Context(), u, r.PathValue("id"), in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, agentOut(ag))
}
