package brokeradmin

import "context"

// Identities is the client as the coordinator's service uses it to provision, rotate
// and revoke agents' broker users (service.BrokerIdentities).
type Identities struct{ Client *Client }

// PutAgent creates or updates the agent's user with this password and its permissions.
// Many concurrent calls share requests to the broker (Client.PutAgent).
func (i Identities) PutAgent(ctx context.Context, agentID, user, password string) error {
	return i.Client.PutAgent(ctx, AgentUser{AgentID: agentID, User: user, Password: password})
}

// RemoveAgent deletes the agent's user and closes its connections.
func (i Identities) RemoveAgent(ctx context.Context, user, reason string) error {
	_, err := i.Client.RemoveAgent(ctx, user, reason)
	return err
}
