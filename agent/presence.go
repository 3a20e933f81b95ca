package agent

import (
	"context"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/executor"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// stocktaking wraps an inventory source for the stock: never nil, at most what a hello
// carries.
func (a *Agent) stocktaking(inv func(context.Context) ([]protocol.Token, error)) func(context.Context) ([]protocol.Token, error) {
	return func(ctx context.Context) ([]protocol.Token, error) {
		toks, err := inv(ctx)
		if err != nil {
			return nil, err
		}
		if toks == nil {
			toks = []protocol.Token{}
		}
		if len(toks) > protocol.MaxTokens {
			a.log.Warn().Int("tokens", len(toks)).Int("limit", protocol.MaxTokens).Msg("more tokens than a hello carries; the rest are left out")
			toks = toks[:protocol.MaxTokens]
		}
		return toks, nil
	}
}

// hello introduces the agent with the tokens of the latest stocktaking. Each hello is a
// new message: the coordinator dedupes on message IDs, so one sent again on a new
// connection must not reuse an ID.
func (a *Agent) hello(toks []protocol.Token, pair *keys.Pair) (*protocol.Envelope, error) {
	return protocol.NewEnvelope(a.cfg.ID, protocol.JobRef{}, protocol.Hello{
		InstanceID: a.instance, Hostname: a.hostname, OS: runtime.GOOS, Arch: runtime.GOARCH,
		AgentVersion: version(), Protocol: protocol.VersionRange{Min: protocol.MinVersion, Max: protocol.Version},
		SealKey: pair.PublicKey(), Tokens: toks,
	})
}

// activity is what a heartbeat needs of the executor.
type activity interface {
	Active() []executor.Activity
}

// heartbeats says the agent is alive, about every HeartbeatInterval, until ctx ends. The
// interval is jittered by ±10% so that agents started together (after a power cut, a
// broker restart) do not beat together. A heartbeat is only sent while connected: a late
// one says nothing, so none waits for the broker.
func (a *Agent) heartbeats(ctx context.Context, conn Transport, ex activity) {
	var seq uint64
	interval := a.cfg.HeartbeatInterval
	t := time.NewTimer(jitter(interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn.Status().State == amqp.StateConnected {
			seq++
			a.beat(ctx, conn, ex, seq, interval)
		}
		t.Reset(jitter(interval))
	}
}

func (a *Agent) beat(ctx context.Context, conn Transport, ex activity, seq uint64, timeout time.Duration) {
	hb := protocol.Heartbeat{InstanceID: a.instance, Seq: seq, UptimeSeconds: uint64(time.Since(a.started) / time.Second)}
	if act := ex.Active(); len(act) > 0 {
		// A heartbeat names one job: the first by ID, so that it does not flicker between
		// jobs run side by side.
		slices.SortFunc(act, func(x, y executor.Activity) int { return strings.Compare(x.Job.JobID, y.Job.JobID) })
		job := act[0].Job
		hb.CurrentJob, hb.Step = &job, act[0].Step
	}
	env, err := protocol.NewEnvelope(a.cfg.ID, protocol.JobRef{}, hb)
	if err != nil {
		a.log.Error().Err(err).Msg("making a heartbeat")
		return
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := conn.PublishEvent(pctx, env); err != nil && ctx.Err() == nil {
		a.log.Debug().Err(err).Uint64("seq", seq).Msg("heartbeat not sent")
	}
}

// jitter returns d ± 10%.
func jitter(d time.Duration) time.Duration {
	spread := d / 5
	if spread <= 0 {
		return d
	}
	return d - spread/2 + rand.N(spread)
}
