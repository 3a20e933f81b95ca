package console

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// oidcEnabled reports whether single sign-on is offered.
func (c *Console) oidcEnabled() bool { return false }

func (c *Console) oidcStart(w http.ResponseWriter, r *http.Request) {
	c.fail(w, r, &service.Error{Code: service.CodeNotFound, Msg: "single sign-on is not configured on this coordinator: sign in with your username and password"})
}

func (c *Console) oidcCallback(w http.ResponseWriter, r *http.Request) {
	c.oidcStart(w, r)
}
