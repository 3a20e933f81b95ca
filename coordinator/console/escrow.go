package console

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// The escrow pages: the organisation's recovery certificates ("backup keys"), the escrowed
// keys of a holder or a token with the form that asks for a recovery, and holders'
// encryption keys with their certificates to download. Every action is the service
// operation the API calls; opening an archive is never done here (the recovery private
// key stays with the officers), the job page says what to run instead.

// recoveryWarning marks a recovery certificate that expires soon: archives are no longer
// sealed to it once it has expired.
const recoveryWarning = 90 * 24 * time.Hour

type recoveryCertRow struct {
	service.RecoveryCertificate
	DaysLeft int
	Expired  bool
	Expiring bool // within recoveryWarning
}

type recoveryCertsData struct {
	Rows      []recoveryCertRow
	InUse     int  // in use and not expired: what new archives are sealed to
	CanManage bool // administrators (manage_profiles) add and retire
	PEM       string
	Failed    string // the certificate whose retirement was refused
	Reason    string
}

// recoveryCerts lists the backup keys, retired ones too: common name, expiry and how soon,
// key id, state; administrators add one (a PEM pasted or uploaded) and retire one with a
// reason.
func (c *Console) recoveryCerts(w http.ResponseWriter, r *http.Request, d recoveryCertsData, e *service.Error) {
	s := session(r)
	d.CanManage = can(s.User, jobs.PermManageProfiles)
	cs, err := c.svc.ListRecoveryCertificates(r.Context(), s.Actor, true)
	if err != nil && e == nil {
		e = service.AsError(err)
	}
	now := c.now()
	for _, rc := range cs {
		left := rc.NotAfter.Sub(now)
		row := recoveryCertRow{RecoveryCertificate: rc, DaysLeft: int(left.Hours() / 24), Expired: left <= 0}
		row.Expiring = !row.Expired && rc.Retired.IsZero() && left <= recoveryWarning
		if rc.Retired.IsZero() && !row.Expired {
			d.InUse++
		}
		d.Rows = append(d.Rows, row)
	}
	c.page(w, r, "recovery_certs", Page{Title: "Backup keys (recovery certificates)", Section: "recovery-certificates", Data: d, Error: e})
}

// addRecoveryCert adds a recovery certificate through service.AddRecoveryCertificate from
// the PEM pasted, or from the file chosen when one was.
func (c *Console) addRecoveryCert(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	text := r.PostFormValue("certificate")
	if f, _, err := r.FormFile("file"); err == nil {
		b, rerr := io.ReadAll(io.LimitReader(f, service.MaxRecoveryCertPEM+1))
		_ = f.Close()
		if rerr != nil {
			c.recoveryCerts(w, r, recoveryCertsData{}, badFilter("file", "could not be read: %v", rerr))
			return
		}
		if len(b) > 0 {
			text = string(b)
		}
	} else if !errors.Is(err, http.ErrMissingFile) && !errors.Is(err, http.ErrNotMultipart) {
		c.recoveryCerts(w, r, recoveryCertsData{}, badFilter("file", "could not be read: %v", err))
		return
	}
	if strings.TrimSpace(text) == "" {
		c.recoveryCerts(w, r, recoveryCertsData{}, badFilter("certificate", "is empty: paste the recovery certificate (PEM, -----BEGIN CERTIFICATE-----) or choose its file"))
		return
	}
	rc, err := c.svc.AddRecoveryCertificate(r.Context(), s.Actor, text)
	if err != nil {
		c.recoveryCerts(w, r, recoveryCertsData{PEM: text}, service.AsError(err))
		return
	}
	c.setFlash(w, fmt.Sprintf("Recovery certificate %s (%s) added: new archives are sealed to it.", rc.ID, rc.CommonName))
	http.Redirect(w, r, Prefix+"recovery-certificates", http.StatusSeeOther)
}

// retireRecoveryCert retires a recovery certificate with a reason.
func (c *Console) retireRecoveryCert(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	id, reason := r.PathValue("id"), r.PostFormValue("reason")
	rc, err := c.svc.RetireRecoveryCertificate(r.Context(), s.Actor, id, reason)
	if err != nil {
		c.recoveryCerts(w, r, recoveryCertsData{Failed: id, Reason: reason}, service.AsError(err))
		return
	}
	c.setFlash(w, fmt.Sprintf("Recovery certificate %s (%s) retired: nothing new is sealed to it; archives sealed to it still open with it.", rc.ID, rc.CommonName))
	http.Redirect(w, r, Prefix+"recovery-certificates", http.StatusSeeOther)
}

type escrowData struct {
	Holder, Token string
	Keys          []service.EscrowedKey
	// EncKeys are the holder's encryption keys (a holder named only).
	EncKeys []service.EncryptionKey
	// CanRecover: the user's roles may ask for a recovery (request or recover_keys).
	CanRecover bool
	Failed     string // the escrowed key whose recovery was refused
	Form       recoverForm
	Back       string // this page with its holder and token, for the forms
}

type recoverForm struct {
	Target, Agent, TokenSerial, Reason string
}

// escrow shows the escrowed keys of a holder or a token, with their state and where a
// recovery put them, the form asking for a recovery, and the holder's encryption keys.
func (c *Console) escrow(w http.ResponseWriter, r *http.Request, d escrowData, e *service.Error) {
	s := session(r)
	ctx := r.Context()
	q := listQuery(r, Prefix+"escrow", "holder", "token")
	d.Holder, d.Token = strings.TrimSpace(q.Get("holder")), strings.TrimSpace(q.Get("token"))
	d.CanRecover = can(s.User, jobs.PermRequest) || can(s.User, jobs.PermRecoverKeys)
	d.Back = q.here()
	if d.Holder != "" || d.Token != "" {
		ks, err := c.svc.ListEscrowedKeys(ctx, s.Actor, d.Holder, d.Token)
		if err != nil && e == nil {
			e = service.AsError(err)
		}
		d.Keys = ks
	}
	if d.Holder != "" && e == nil {
		eks, err := c.svc.ListEncryptionKeys(ctx, s.Actor, d.Holder, d.Token)
		if err != nil {
			e = service.AsError(err)
		}
		d.EncKeys = eks
	}
	c.page(w, r, "escrow", Page{Title: "Escrowed keys", Section: "escrow", Data: d, Error: e})
}

// requestRecovery asks for an escrowed key's recovery through service.RequestRecovery.
func (c *Console) requestRecovery(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	id := r.PathValue("id")
	f := recoverForm{Target: strings.TrimSpace(r.PostFormValue("target")), Agent: strings.TrimSpace(r.PostFormValue("agent")),
		TokenSerial: strings.TrimSpace(r.PostFormValue("token_serial")), Reason: r.PostFormValue("reason")}
	req := service.RecoveryRequest{Target: f.Target, Reason: f.Reason}
	if f.Target == store.RecoveryToToken {
		req.Agent, req.TokenSerial = f.Agent, f.TokenSerial
	}
	j, err := c.svc.RequestRecovery(r.Context(), s.Actor, id, req)
	if err != nil {
		c.escrow(w, r, escrowData{Failed: id, Form: f}, service.AsError(err))
		return
	}
	c.setFlash(w, fmt.Sprintf("Recovery of escrowed key %s is job %s: it waits for %d approvals by key-recovery officers.", id, j.ID, j.Required))
	http.Redirect(w, r, Prefix+"jobs/"+j.ID, http.StatusSeeOther)
}

// encryptionCert downloads one of a holder's encryption certificates as PEM, read through
// service.ListEncryptionKeys (the holder themself, or a reader of certificates).
func (c *Console) encryptionCert(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	holder, id := r.PathValue("holder"), r.PathValue("id")
	ks, err := c.svc.ListEncryptionKeys(r.Context(), s.Actor, holder, "")
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for _, k := range ks {
		if k.ID != id {
			continue
		}
		noStore(w.Header())
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.pem"`, safeFileName(holder), safeFileName(k.CertificateSerial)))
		_ = pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: k.Certificate})
		return
	}
	c.fail(w, r, &service.Error{Code: service.CodeNotFound, Msg: fmt.Sprintf("%s has no encryption key %q", holder, id)})
}

// safeFileName keeps letters, digits, dot, dash and underscore, for a download's name.
func safeFileName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}
