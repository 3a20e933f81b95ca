package brokeradmin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
)

// Check verifies, at start, what provisioning needs: the API answers, the management
// user's credentials work, the user has the administrator tag and may read users, and
// the vhost exists. Each error says what to fix.
func (c *Client) Check(ctx context.Context) error {
	var who struct {
		Name string          `json:"name"`
		Tags json.RawMessage `json:"tags"`
	}
	err := c.do(ctx, http.MethodGet, "/whoami", nil, &who, nil)
	var ae *APIError
	switch {
	case errors.Is(err, ErrUnauthorized):
		return fmt.Errorf("broker management API at %s refused the login of %q (%w): check the password; if the user does not exist, create it: rabbitmqctl add_user %s PASSWORD && rabbitmqctl set_user_tags %s administrator",
			c.base, c.user, err, c.user, c.user)
	case errors.As(err, &ae):
		// A 404, or the management UI's page (406 to a JSON request): not the API's root.
		return fmt.Errorf("broker management API at %s: %w: check the URL (the management UI's address, without /api)", c.base, err)
	case err != nil:
		return fmt.Errorf("broker management API at %s does not answer (%w): enable it on the broker with: rabbitmq-plugins enable rabbitmq_management (it listens on 15672, or 15671 with TLS)",
			c.base, err)
	}
	tags := parseTags(who.Tags)
	if !slices.Contains(tags, "administrator") {
		return fmt.Errorf("broker management user %q has tags %v, but creating users and setting permissions needs the administrator tag: rabbitmqctl set_user_tags %s administrator (it replaces the user's tags: list any others too)",
			c.user, tags, c.user)
	}
	// The tag says the broker would allow it; this says nothing between us (a reverse
	// proxy) forbids the users endpoints.
	if err := c.do(ctx, http.MethodGet, apiPath("users", c.user), nil, nil, nil); err != nil {
		return fmt.Errorf("broker management user %q may not read users at %s (%w): give it the administrator tag (rabbitmqctl set_user_tags %s administrator) and let /api/users through any proxy",
			c.user, c.base, err, c.user)
	}
	if err := c.do(ctx, http.MethodGet, apiPath("vhosts", c.vhost), nil, nil, nil); err != nil {
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("broker vhost %q does not exist (%w): create it with rabbitmqctl add_vhost %s, or correct the vhost", c.vhost, err, c.vhost)
		}
		return fmt.Errorf("broker vhost %q: %w", c.vhost, err)
	}
	c.log.Info().Str("management_api", c.base).Str("user", c.user).Str("vhost", c.vhost).Msg("broker management API ready to provision agents' users")
	return nil
}
