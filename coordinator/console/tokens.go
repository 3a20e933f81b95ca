package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// tokenCerts is how many of a token's certificates its row shows.
const tokenCerts = 5

type tokenRow struct {
	service.Token
	Certs     []certRow
	MoreCerts bool
	// Moves is where the help desk may move the token in its life cycle.
	Moves []tokenlife.State
}

type tokensData struct {
	List[tokenRow]
	// CertsHidden: the user's roles do not read certificates (the navigation mirrors the
	// service's read rule), so none is asked for: no refusals fill the audit log.
	CertsHidden bool
	// CanManage: the user's roles move tokens in their life cycle (the service decides).
	CanManage bool
	Back      string
	Failed    string // the token whose move was refused
	Reason    string // and the reason typed
}

var tokenFilters = []string{"q", "agent", "holder", "model"}

// tokens lists tokens as agents last reported them, with their life-cycle state and the
// certificates on each: holder, profile, serial and expiry (days left, marked when within
// the profile's warning); the help desk moves a token (suspend, reinstate, lost, ...)
// with a reason.
func (c *Console) tokens(w http.ResponseWriter, r *http.Request, failed string, e *service.Error) {
	s := session(r)
	ctx := r.Context()
	q := listQuery(r, Prefix+"tokens", tokenFilters...)
	d := tokensData{CertsHidden: !shows(s.User, "certificates"), CanManage: can(s.User, jobs.PermManageTokens), Back: q.here(), Failed: failed}
	if failed != "" {
		d.Reason = r.PostFormValue("reason")
	}
	ts, next, err := c.svc.SearchTokens(ctx, s.Actor, service.TokenQuery{Agent: q.Get("agent"), Holder: q.Get("holder"),
		Model: q.Get("model"), Search: q.Get("q")}, q.Page())
	if err != nil {
		if e == nil { // a refused move says why, rather than that the list is not readable
			e = service.AsError(err)
		}
		d.List = listOf(q, []tokenRow(nil), "")
		c.page(w, r, "tokens", Page{Title: "Tokens", Section: "tokens", Data: d, Error: e})
		return
	}
	rows := make([]tokenRow, len(ts))
	for i, t := range ts {
		rows[i] = tokenRow{Token: t}
		for _, m := range tokenlife.Next(t.State) {
			if m != tokenlife.Replaced { // replaced comes from a replacement's success
				rows[i].Moves = append(rows[i].Moves, m)
			}
		}
		if !d.CertsHidden {
			rows[i].Certs, rows[i].MoreCerts = c.certsOn(ctx, s.Actor, t.Serial)
		}
	}
	d.List = listOf(q, rows, next)
	c.page(w, r, "tokens", Page{Title: "Tokens", Section: "tokens", Data: d, Error: e})
}

// setTokenState moves a token through service.SetTokenState with the state chosen and a
// reason; a refusal is shown on the list with the service's message.
func (c *Console) setTokenState(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	serial := r.PathValue("serial")
	state := tokenlife.State(strings.TrimSpace(r.PostFormValue("state")))
	if state == "" {
		c.tokens(w, r, serial, badFilter("state", "is required: choose where the token goes"))
		return
	}
	l, err := c.svc.SetTokenState(r.Context(), s.Actor, serial, state, r.PostFormValue("reason"))
	if err != nil {
		c.tokens(w, r, serial, service.AsError(err))
		return
	}
	c.setFlash(w, fmt.Sprintf("Token %s is now %s.", l.Serial, l.State))
	http.Redirect(w, r, backTo(r, Prefix+"tokens"), http.StatusSeeOther)
}

// certsOn is the newest certificates on a token.
func (c *Console) certsOn(ctx context.Context, by service.Actor, serial string) ([]certRow, bool) {
	cs, next, err := c.svc.ListCertificates(ctx, by, service.CertificateQuery{TokenSerial: serial}, service.Page{Limit: tokenCerts})
	if err != nil {
		return nil, false
	}
	return c.certRows(cs), next != ""
}
