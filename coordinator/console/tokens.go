package console

import (
	"context"
	"net/http"
	"slices"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func init() {
	register("GET /ui/tokens", false, func(c *Console) http.HandlerFunc { return c.tokens })
}

// tokenCerts is how many of a token's certificates its row shows.
const tokenCerts = 5

type tokenRow struct {
	service.Token
	Certs     []certRow
	MoreCerts bool
}

type tokensData struct {
	List[tokenRow]
	// CertsHidden: the user's roles do not read certificates, so none is shown.
	CertsHidden bool
}

var tokenFilters = []string{"q", "agent", "holder", "model"}

// tokens lists tokens as agents last reported them, with the certificates on each: holder,
// profile, serial and expiry (days left, marked when within the profile's warning).
func (c *Console) tokens(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	ctx := r.Context()
	q := queryOf(r, tokenFilters...)
	d := tokensData{CertsHidden: !readsCertificates(s.User)}
	ts, next, err := c.svc.SearchTokens(ctx, s.Actor, service.TokenQuery{Agent: q.Get("agent"), Holder: q.Get("holder"),
		Model: q.Get("model"), Search: q.Get("q")}, q.Page())
	if err != nil {
		d.List = listOf(q, []tokenRow(nil), "")
		c.page(w, r, "tokens", Page{Title: "Tokens", Section: "tokens", Data: d, Error: service.AsError(err)})
		return
	}
	rows := make([]tokenRow, len(ts))
	for i, t := range ts {
		rows[i] = tokenRow{Token: t}
		if !d.CertsHidden {
			rows[i].Certs, rows[i].MoreCerts = c.certsOn(ctx, s.Actor, t.Serial)
		}
	}
	d.List = listOf(q, rows, next)
	c.page(w, r, "tokens", Page{Title: "Tokens", Section: "tokens", Data: d})
}

// readsCertificates is whether the navigation offers certificates to u: it mirrors the
// service's read rule, so that a token list does not fill the audit log with refusals.
func readsCertificates(u service.User) bool {
	return slices.ContainsFunc(navFor(u), func(n NavItem) bool { return n.Key == "certificates" })
}

// certsOn is the newest certificates on a token.
func (c *Console) certsOn(ctx context.Context, by service.Actor, serial string) ([]certRow, bool) {
	cs, next, err := c.svc.ListCertificates(ctx, by, service.CertificateQuery{TokenSerial: serial}, service.Page{Limit: tokenCerts})
	if err != nil {
		return nil, false
	}
	return c.certRows(cs), next != ""
}
