package doctor

import (
	"context"
	"errors"
)

// fixer is an error that knows its fix (agent.BrokerConfigError).
type fixer interface {
	What() string
	Fix() string
}

// broker logs in as the agent and checks its queue, as the agent does at start.
func (e Env) broker(ctx context.Context) Result {
	err := e.Broker(ctx)
	if err == nil {
		return pass("the broker takes the agent's credentials and has its queue")
	}
	var f fixer
	if errors.As(err, &f) {
		return fail(f.What(), f.Fix())
	}
	return fail(err.Error(), "check that the broker runs and that this machine reaches it (broker.url, firewalls); an amqps:// broker's CA is broker.ca_file")
}
