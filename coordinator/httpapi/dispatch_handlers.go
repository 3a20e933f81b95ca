package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// retry starts a new attempt of a failed job.
func (a *server) retry(w http.ResponseWriter, r *http.Request, u service.Actor) {
	// The deadline is read as text, so that a malformed one is refused naming the field.
	var in struct {
		api.Retry
		Deadline string `json:"deadline"`
	}
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	deadline, err := parseDeadline(in.Deadline)
	if err != nil {
		a.fail(w, err)
		return
	}
	d, err := a.svc.RetryJob(r.Context(), u, r.PathValue("id"), service.RetryRequest{Reason: in.Reason, Deadline: deadline})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, jobDetailOut(d))
}

// revokeCertificate revokes a certificate (admin or CA operator).
func (a *server) revokeCertificate(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.Revoke
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

// caCertificate serves the CA's certificates to anyone: relying parties need them, and
// they are public.
func (a *server) caCertificate(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	certs, err := a.svc.CACertificates()
	if err != nil {
		a.fail(w, err)
		return
	}
	out := api.CAChain{Certificates: make([]api.CACertificate, 0, len(certs))}
	var b strings.Builder
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // a strings.Builder does not fail
		sum := sha256.Sum256(c.Raw)
		out.Certificates = append(out.Certificates, api.CACertificate{Subject: c.Subject.String(), Issuer: c.Issuer.String(),
			Serial: c.SerialNumber.Text(16), NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), SHA256: hex.EncodeToString(sum[:])})
	}
	out.PEM = b.String()
	writeJSON(w, http.StatusOK, out)
}

// resetAgentKey forgets an agent's recorded seal key (admin).
func (a *server) resetAgentKey(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.Reason
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
