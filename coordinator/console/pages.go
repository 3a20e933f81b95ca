package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// The list and management pages (agents, tokens, certificates, rollouts, audit, profiles,
// notifications) share these: a list re-rendered with the refusal of an action sent from
// it, and the way back to it after an action.

// backTo is the list page an action form came from (its filters and page kept in the
// form's "back" field), so that the browser returns there; only a URL of that list is
// taken, never another site's.
func backTo(r *http.Request, list string) string {
	b := r.PostFormValue("back")
	if b == list || strings.HasPrefix(b, list+"?") {
		return b
	}
	return list
}

// listQuery is a list's filters: from the URL for a GET, from the back URL of the form
// for an action being answered with the list and its refusal.
func listQuery(r *http.Request, list string, names ...string) Query {
	if r.Method != http.MethodPost {
		return queryOf(r, names...)
	}
	u, err := url.Parse(backTo(r, list))
	if err != nil {
		u = &url.URL{Path: list}
	}
	r2 := r.Clone(r.Context())
	r2.URL = u
	return queryOf(r2, names...)
}

// here is the list's URL with its filters and cursor, for the back field of its forms.
func (q Query) here() string { return q.url(q.Values) }

// profileNames names the profiles, for a list's profile filter; none when they cannot be
// read (the list still works).
func (c *Console) profileNames(ctx context.Context, by service.Actor) []string {
	ps, err := c.svc.ListProfiles(ctx, by)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		names = append(names, p.Name)
	}
	return names
}

// badFilter is the error of a filter value the page does not know.
func badFilter(field, format string, args ...any) *service.Error {
	e := &service.Error{Code: service.CodeBadRequest, Field: field}
	e.Msg = fmt.Sprintf(format, args...)
	return e
}

// expiry is how a certificate's end of validity reads on a list: days left, and whether
// its profile's warning period has begun.
type expiry struct {
	DaysLeft int
	Expired  bool
	Expiring bool // within the profile's warning period (or a week when it has none)
}

// defaultWarning marks certificates of profiles without an expiry warning.
const defaultWarning = 7 * 24 * time.Hour

func expiryOf(now time.Time, c service.Certificate) expiry {
	left := c.NotAfter.Sub(now)
	w := c.ExpiryWarning
	if w <= 0 {
		w = defaultWarning
	}
	e := expiry{DaysLeft: int(left.Hours() / 24), Expired: left <= 0}
	e.Expiring = !e.Expired && c.RevokedAt.IsZero() && left <= w
	return e
}

// certRow is a certificate on a list.
type certRow struct {
	service.Certificate
	Expiry     expiry
	ReasonName string // the revocation reason, when revoked
}

func (c *Console) certRows(cs []service.Certificate) []certRow {
	now := c.now()
	out := make([]certRow, len(cs))
	for i, ct := range cs {
		out[i] = certRow{Certificate: ct, Expiry: expiryOf(now, ct)}
		if !ct.RevokedAt.IsZero() {
			out[i].ReasonName = reasonName(ct.RevocationReason)
		}
	}
	return out
}

// reasonName is an RFC 5280 reason code's name as RevokeCertificate takes it.
func reasonName(code int) string {
	for _, n := range service.RevocationReasons() {
		if c, err := service.ParseRevocationReason(n); err == nil && c == code {
			return n
		}
	}
	return fmt.Sprintf("code %d", code)
}
