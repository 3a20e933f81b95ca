package ctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
)

// resolveToken turns issue's --token, a serial or a PKCS#11 URI, into the serial of one
// token agent last reported. A serial must be one of them too: that keeps an API token
// passed to --token out of the job's record, and a typo from waiting for a token that
// never comes.
func resolveToken(ctx context.Context, c *client.Client, agent, arg string) (string, error) {
	var (
		u   *uri.URI
		err error
	)
	isURI := strings.HasPrefix(strings.ToLower(arg), uri.Scheme+":")
	if isURI {
		if u, err = uri.Parse(arg); err != nil {
			return "", usageErrorf("--token: %v", err)
		}
	}
	var matched []client.Token
	for tok, err := range c.AllTokens(ctx, client.TokenFilter{Agent: agent}, maxPageSize) {
		if err != nil {
			return "", err
		}
		if isURI && u.MatchToken(tok.Label, tok.Manufacturer, tok.Serial, tok.Model) || !isURI && tok.Serial == arg {
			matched = append(matched, tok)
		}
	}
	switch {
	case len(matched) == 1:
		return matched[0].Serial, nil
	case len(matched) > 1:
		serials := make([]string, len(matched))
		for i, t := range matched {
			serials[i] = t.Serial
		}
		return "", fmt.Errorf("--token %s matches %d tokens of agent %s (serials %s): add serial=... to the URI, or pass the serial",
			arg, len(matched), agent, strings.Join(serials, ", "))
	case isURI:
		return "", fmt.Errorf("--token %s matches no token agent %s reported (tokenfleetctl tokens --agent %s lists them)", arg, agent, agent)
	}
	return "", fmt.Errorf("--token: agent %s reported no token with serial %q (tokenfleetctl tokens --agent %s lists them); for a token it has not reported yet, pass --token-serial; the API token goes in --token-file or %s, not in issue's --token",
		agent, arg, agent, EnvToken)
}
