package brokeradmin

import "context"

// Identities is the client as the coordinator's service uses it to provision, rotate
// and revoke agents' broker users (service.BrokerIdentities).
type Identities struct {
	Client *Client
	// DeclareQueues makes PutAgent also declare the agent's command queue and its
	// binding, in the same request as its user (AgentUser.Queue).
	DeclareQueues bool
}

// PutAgent creates or updates the agent's user with this password and its permissions,
// and its queue when DeclareQueues is set. Concurrent calls share requests to the broker.
func (i Identities) PutAgent(ctx context.Context, agentID, user, password string) error {
	return i.Client.PutAgent(ctx, AgentUser{AgentID: agentID, User: user, Password: password, Queue: i.DeclareQueues})
}

// DeclaresQueues says whether PutAgent declares the agent's command queue, so that the
// coordinator may skip its own declaration.
func (i Identities) DeclaresQueues() bool { return i.DeclareQueues }

// RemoveAgent deletes the agent's user and closes its connections.
func (i Identities) RemoveAgent(ctx context.Context, user, reason string) error {
	_, err := i.Client.RemoveAgent(ctx, user, reason)
	return err
}
