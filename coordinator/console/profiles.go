package console

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// ProfileField is the form field holding a profile document (YAML, one or more profiles):
// the body of the API's profile apply.
const ProfileField = "content"

type profilesData struct {
	Profiles []service.Profile
	CanEdit  bool
	Text     string // a document that was refused, kept for correcting
}

type profileData struct {
	service.Profile
	CanEdit bool
	Text    string // what the editor holds: the stored text, or a refused edit
	Edited  bool   // Text is a refused edit, not what is stored
}

// profiles lists the profiles with their version and hash; an administrator applies a
// new profile document from here.
func (c *Console) profiles(w http.ResponseWriter, r *http.Request, text string, e *service.Error) {
	s := session(r)
	ps, err := c.svc.ListProfiles(r.Context(), s.Actor)
	if err != nil && e == nil {
		e = service.AsError(err)
	}
	d := profilesData{Profiles: ps, CanEdit: can(s.User, jobs.PermManageProfiles), Text: text}
	c.page(w, r, "profiles", Page{Title: "Profiles", Section: "profiles", Data: d, Error: e})
}

// profilePage shows a profile as stored (its text, byte for byte) and its hash; an
// administrator edits the text in place. edited, when set, is a refused edit shown again
// with the refusal, so that nothing typed is lost, and nothing stored was changed.
func (c *Console) profilePage(w http.ResponseWriter, r *http.Request, name, edited string, e *service.Error) {
	s := session(r)
	p, err := c.svc.GetProfile(r.Context(), s.Actor, name)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d := profileData{Profile: p, CanEdit: can(s.User, jobs.PermManageProfiles), Text: string(p.Content)}
	if e != nil {
		d.Text, d.Edited = edited, true
	}
	c.page(w, r, "profile", Page{Title: "Profile " + p.Name, Section: "profiles", Data: d, Error: e})
}

// applyProfiles posts a profile document to service.ApplyProfiles, as tokenfleetctl
// profile apply does. A refusal (a field that does not validate, named by its path; a
// document too large; no permission) is shown with the text as typed: the stored profile
// is unchanged.
func (c *Console) applyProfiles(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	text := r.PostFormValue(ProfileField)
	name := r.PathValue("name")
	refused := func(e *service.Error) {
		if name != "" {
			c.profilePage(w, r, name, text, e)
			return
		}
		c.profiles(w, r, text, e)
	}
	if strings.TrimSpace(text) == "" {
		refused(&service.Error{Code: service.CodeInvalidProfile, Field: ProfileField, Msg: "the profile document is empty: paste or type its YAML"})
		return
	}
	ps, err := c.svc.ApplyProfiles(r.Context(), s.Actor, []byte(text))
	if err != nil {
		refused(service.AsError(err))
		return
	}
	var said []string
	for _, p := range ps {
		switch {
		case p.Unchanged:
			said = append(said, fmt.Sprintf("%s unchanged (version %d)", p.Name, p.Version))
		default:
			said = append(said, fmt.Sprintf("%s is now version %d", p.Name, p.Version))
		}
	}
	c.setFlash(w, "Profiles applied: "+strings.Join(said, "; ")+".")
	to := Prefix + "profiles"
	if len(ps) == 1 {
		to += "/" + ps[0].Name
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}
