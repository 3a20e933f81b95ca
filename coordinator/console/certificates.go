package console

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

type certificatesData struct {
	List[certRow]
	Profiles  []string
	Reasons   []string // RFC 5280 reasons, as RevokeCertificate takes them
	CanRevoke bool
	Back      string
	Failed    string // the certificate whose revocation was refused
	Reason    string // and what was chosen and typed
	Comment   string
}

var certFilters = []string{"holder", "profile", "status", "expires_within", "agent", "token"}

// maxExpiresWithin bounds the "expires within N days" filter (ten years).
const maxExpiresWithin = 3660

// certificates lists the certificates issued here, newest first: serial, subject,
// holder, profile, token, expiry (days left, marked within the profile's warning period)
// and revocation; a CA operator or administrator revokes one with an RFC 5280 reason.
func (c *Console) certificates(w http.ResponseWriter, r *http.Request, failed string, e *service.Error) {
	s := session(r)
	ctx := r.Context()
	q := listQuery(r, Prefix+"certificates", certFilters...)
	d := certificatesData{Reasons: service.RevocationReasons(), CanRevoke: can(s.User, jobs.PermCAOperator), Back: q.here(), Failed: failed}
	if failed != "" {
		d.Reason, d.Comment = r.PostFormValue("reason"), r.PostFormValue("comment")
	}
	d.Profiles = c.profileNames(ctx, s.Actor)
	show := func(e *service.Error) {
		c.page(w, r, "certificates", Page{Title: "Certificates", Section: "certificates", Data: d, Error: e})
	}
	d.List = listOf(q, []certRow(nil), "")
	cq := service.CertificateQuery{Holder: q.Get("holder"), Profile: q.Get("profile"), Agent: q.Get("agent"), TokenSerial: q.Get("token")}
	switch st := q.Get("status"); st {
	case "":
	case "valid", "revoked":
		revoked := st == "revoked"
		cq.Revoked = &revoked
	default:
		show(badFilter("status", "is %q: want valid or revoked", st))
		return
	}
	if v := q.Get("expires_within"); v != "" {
		days, err := strconv.Atoi(v)
		if err != nil || days < 0 || days > maxExpiresWithin {
			show(badFilter("expires_within", "is %q: give a number of days from 0 to %d", v, maxExpiresWithin))
			return
		}
		cq.ExpiresBefore = c.now().Add(time.Duration(days) * 24 * time.Hour)
	}
	cs, next, err := c.svc.ListCertificates(ctx, s.Actor, cq, q.Page())
	if err != nil {
		show(service.AsError(err))
		return
	}
	d.List = listOf(q, c.certRows(cs), next)
	show(e)
}

// revoke revokes a certificate through service.RevokeCertificate with the reason chosen
// and a comment; a refusal is shown on the list with the service's message.
func (c *Console) revoke(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	serial := r.PathValue("serial")
	name := strings.TrimSpace(r.PostFormValue("reason"))
	if name == "" {
		c.certificates(w, r, serial, badFilter("reason", "is required: one of %s", strings.Join(service.RevocationReasons(), ", ")))
		return
	}
	reason, err := service.ParseRevocationReason(name)
	if err == nil {
		_, err = c.svc.RevokeCertificate(r.Context(), s.Actor, serial, reason, r.PostFormValue("comment"))
	}
	if err != nil {
		c.certificates(w, r, serial, service.AsError(err))
		return
	}
	c.setFlash(w, fmt.Sprintf("Certificate %s revoked (%s).", serial, name))
	http.Redirect(w, r, backTo(r, Prefix+"certificates"), http.StatusSeeOther)
}
