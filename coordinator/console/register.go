package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	regexport "github.com/tokenfleet/tokenfleet/coordinator/register"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

type registerData struct {
	service.Register
	Asked string // the organisation asked for ("" for the default)
	CSV   string // links to the exports of the register shown
	PDF   string
}

// registerPage is the crypto-device register: every device issued, oldest first, with
// its document and history, and links to its CSV and PDF exports. Who reads an
// organisation's jobs reads its register.
func (c *Console) registerPage(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	org := r.URL.Query().Get("organization")
	reg, err := c.svc.ReadRegister(r.Context(), s.Actor, service.RegisterQuery{Organization: org})
	d := registerData{Register: reg, Asked: org}
	link := func(format string) string {
		q := url.Values{"format": {format}}
		if org != "" {
			q.Set("organization", org)
		}
		return Prefix + "register/export?" + q.Encode()
	}
	d.CSV, d.PDF = link(api.RegisterCSV), link(api.RegisterPDF)
	c.page(w, r, "register", Page{Title: "Crypto-device register", Section: "register", Data: d, Error: service.AsError(err)})
}

// registerExport sends the register as a CSV or PDF file, as the API does, under the
// console's session.
func (c *Console) registerExport(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	q := r.URL.Query()
	format := q.Get("format")
	if format != api.RegisterCSV && format != api.RegisterPDF {
		c.fail(w, r, badFilter("format", "is %q: want csv or pdf", format))
		return
	}
	reg, err := c.svc.ReadRegister(r.Context(), s.Actor, service.RegisterQuery{Organization: q.Get("organization")})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	out := regexport.Of(reg)
	ctype, b, err := regexport.Render(out, format)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	h := w.Header()
	noStore(h)
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, regexport.FileName(out, format)))
	_, _ = w.Write(b) // the browser may be gone; nothing useful can be done
}
