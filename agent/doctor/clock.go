package doctor

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxSkew is the clock difference with the coordinator the check accepts. Certificates
// are signed on the coordinator's clock and checked on the workstation's: a larger skew
// makes a new certificate not yet valid, and job deadlines wrong.
const MaxSkew = time.Minute

// clock compares this machine's clock with the Date header of the coordinator's /healthz.
// The header has whole seconds and the request takes its time: the local time compared is
// the middle of the request, and a second more than MaxSkew is allowed for the rounding.
func (e Env) clock(ctx context.Context) Result {
	if e.CoordinatorURL == "" {
		return skipped("no coordinator URL to compare the clock with", "give the coordinator's URL: --coordinator https://coordinator.example.org:8443")
	}
	u, err := url.Parse(e.CoordinatorURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fail(fmt.Sprintf("coordinator URL %q: want http(s)://host:port", e.CoordinatorURL), "give the coordinator's API URL, as tokenfleetctl uses it")
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fail(err.Error(), "give the coordinator's API URL, as tokenfleetctl uses it")
	}
	client := e.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	before := e.Now()
	resp, err := client.Do(req)
	if err != nil {
		return fail(fmt.Sprintf("asking the coordinator for the time: %v", err),
			"check the URL and that this machine reaches the coordinator; a coordinator with a private CA needs --coordinator-ca")
	}
	after := e.Now()
	_ = resp.Body.Close()
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return fail(fmt.Sprintf("the coordinator's answer (%s) has no usable Date header", resp.Status), "check that the URL is the coordinator's")
	}
	// The header drops the fraction of its second: half a second is the best guess.
	date = date.Add(500 * time.Millisecond)
	local := before.Add(after.Sub(before) / 2)
	skew := local.Sub(date)
	if skew.Abs() > MaxSkew+time.Second {
		ahead := "ahead of"
		if skew < 0 {
			ahead = "behind"
		}
		return fail(fmt.Sprintf("this machine's clock is %s %s the coordinator's (more than %s)", skew.Abs().Round(time.Second), ahead, MaxSkew),
			"synchronise the clock: timedatectl set-ntp true (Windows: w32tm /resync), on this machine or the coordinator, whichever is wrong")
	}
	return pass(fmt.Sprintf("within %s of the coordinator's clock", skew.Abs().Round(time.Second)))
}
