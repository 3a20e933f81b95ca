package brokeradmin

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// DefaultBatchWait and DefaultBatchMax are how long a PutAgent waits for others to share
// its request, and how many agents one request carries at most, when Config leaves them
// zero.
const (
	DefaultBatchWait = 5 * time.Millisecond
	DefaultBatchMax  = 500
)

// batchesInFlight is how many batches the client works on at once: the users of one
// are looked up while the other is imported. The imports themselves go one at a time:
// RabbitMQ 3.10 carries out about 20 imports a second whatever the concurrency, and
// fewer with several at once.
const batchesInFlight = 2

// importMin is the smallest batch that is imported. RabbitMQ 3.10.8 spends tens of
// milliseconds on an import whatever it holds, carries out one at a time, and creates
// what it lists on two workers, where agents provisioned alone are handled all at once:
// 16 agents imported together took longer than 16 provisioned alone, 32 and more took
// less, and 500 took half as long. A smaller batch is provisioned agent by agent,
// concurrently.
const importMin = 32

// importTimePerAgent extends the request timeout of a definitions import by the
// broker's work per agent (milliseconds of CPU each, more on a loaded broker).
const importTimePerAgent = 20 * time.Millisecond

// Why batches, and only for many agents at once: provisioning one agent alone takes
// four requests (look the user up, put it, its permissions and its topic permissions).
// RabbitMQ's definitions import (POST /api/definitions) creates or updates every user,
// permission and topic permission it lists and leaves everything else alone, so agents
// provisioned together can share one request, and the broker then spends less per agent:
// 500 agents in one import took half as long as 500 alone, 16 at a time. But an import
// has a cost of its own, goes one at a time and creates what it lists on two workers,
// so a small batch loses to its agents' own requests, which the broker handles all at
// once (importMin). Hence PutAgent goes alone while no more than 16 calls are in
// progress, and only the calls beyond are gathered. The per-vhost import (POST
// /api/definitions/{vhost}) is no use: it answers 204 but ignores users and
// permissions.
//
// What the import does not do, the batch does around it, keeping PutAgent's guarantees:
//   - it overwrites any user it lists, tags and password included, so each user is looked
//     up first; a user with tags, or the client's own, is refused as by PutAgent;
//   - it sets a user's topic permissions on the exchanges it lists and keeps those on
//     others, so a user that exists already takes the per-agent path, which drops them;
//   - it stops at the first item the broker refuses, leaving what came before applied
//     (and its workers may still apply some after the answer), so when it fails every
//     agent of it is provisioned again alone, and only an agent that fails alone fails.

// call is one PutAgent waiting for its batch.
type call struct {
	ctx  context.Context
	u    AgentUser // checked, User filled in
	perm protocol.Permissions
	hash string
	done chan error // buffered: the batch never waits for the caller
}

func (cl *call) finish(err error) { cl.done <- err }

// batcher gathers PutAgent calls into definitions imports. It runs from the first
// batched call until Client.Close.
type batcher struct {
	c      *Client
	wait   time.Duration
	max    int
	in     chan *call
	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	slots  chan struct{} // batches in flight
	imp    sync.Mutex    // one import at a time
	wg     sync.WaitGroup
	handed atomic.Int64 // calls handed to the batcher so far (tests wait on it)
}

func (b *batcher) queued() int { return int(b.handed.Load()) }

func newBatcher(c *Client, wait time.Duration, max int) *batcher {
	ctx, cancel := context.WithCancel(context.Background())
	b := &batcher{c: c, wait: wait, max: max, in: make(chan *call, max), ctx: ctx, cancel: cancel,
		slots: make(chan struct{}, batchesInFlight)}
	b.wg.Go(b.loop)
	return b
}

// stop cancels what is in flight and waits for every goroutine of the batcher to end.
func (b *batcher) stop() {
	b.cancel()
	b.wg.Wait()
}

// put provisions one agent in a batch and waits for its result, or for ctx.
func (b *batcher) put(ctx context.Context, cl *call) error {
	select {
	case b.in <- cl:
		b.handed.Add(1)
	case <-ctx.Done():
		return ctx.Err()
	case <-b.ctx.Done():
		return ErrClosed
	}
	select {
	case err := <-cl.done:
		return err
	case <-ctx.Done():
		// The batch may still provision it; the caller has given up and will provision
		// it again, with a new password, if it still wants it.
		return ctx.Err()
	case <-b.ctx.Done():
		select {
		case err := <-cl.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// loop gathers calls: a batch starts with the first call and closes after the batch
// wait or at the batch maximum, then waits for an import slot, taking more calls
// meanwhile while there is room.
func (b *batcher) loop() {
	timer := time.NewTimer(0)
	<-timer.C
	for {
		var batch []*call
		select {
		case cl := <-b.in:
			batch = append(batch, cl)
		case <-b.ctx.Done():
			b.drain(nil)
			return
		}
		timer.Reset(b.wait)
	gather:
		for len(batch) < b.max {
			select {
			case cl := <-b.in:
				batch = append(batch, cl)
			case <-timer.C:
				break gather
			case <-b.ctx.Done():
				b.drain(batch)
				return
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	slot:
		for {
			in := b.in
			if len(batch) >= b.max {
				in = nil
			}
			select {
			case b.slots <- struct{}{}:
				break slot
			case cl := <-in:
				batch = append(batch, cl)
			case <-b.ctx.Done():
				b.drain(batch)
				return
			}
		}
		b.wg.Go(func() {
			defer func() { <-b.slots }()
			b.run(batch)
		})
	}
}

// drain fails the calls of an unsent batch, and those still queued, with ErrClosed.
func (b *batcher) drain(batch []*call) {
	for _, cl := range batch {
		cl.finish(ErrClosed)
	}
	for {
		select {
		case cl := <-b.in:
			cl.finish(ErrClosed)
		default:
			return
		}
	}
}

// callCtx is the call's context, ended also by Close.
func (b *batcher) callCtx(cl *call) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(cl.ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// run provisions one batch: users looked up, the new ones imported together, the
// others (existing users, a user listed twice, the agents of a failed import) one by one.
// A batch smaller than importMin is provisioned one by one all along.
func (b *batcher) run(batch []*call) {
	start := time.Now()
	var fresh, alone, again []*call
	seen := make(map[string]bool, len(batch))
	for _, cl := range batch {
		switch {
		case cl.ctx.Err() != nil:
			cl.finish(cl.ctx.Err())
		case seen[cl.u.User]:
			// Two calls for one user: the import would apply them in no set order.
			again = append(again, cl)
		default:
			seen[cl.u.User] = true
			fresh = append(fresh, cl)
		}
	}
	if len(fresh) < b.c.importMin {
		b.each(len(fresh), func(i int) { b.putAlone(fresh[i]) })
		for _, cl := range again {
			b.putAlone(cl)
		}
		return
	}
	existed := make([]bool, len(fresh))
	errs := make([]error, len(fresh))
	b.each(len(fresh), func(i int) {
		ctx, cancel := b.callCtx(fresh[i])
		defer cancel()
		existed[i], errs[i] = b.c.agentUserExists(ctx, fresh[i].u.User)
	})
	lookedUp := time.Since(start)
	n := 0
	for i, cl := range fresh {
		switch {
		case errs[i] != nil:
			cl.finish(b.c.agentError(cl.u, errs[i]))
		case existed[i]:
			alone = append(alone, cl)
		default:
			fresh[n] = cl
			n++
		}
	}
	fresh = fresh[:n]
	imported := len(fresh)
	var importTook time.Duration
	if len(fresh) > 0 {
		b.imp.Lock()
		importStart := time.Now()
		err := b.c.importAgents(b.ctx, fresh)
		importTook = time.Since(importStart)
		b.imp.Unlock()
		if err != nil {
			b.c.log.Warn().Err(err).Int("agents", len(fresh)).Msg("provisioning agents' broker users together failed; provisioning each alone")
			alone = append(alone, fresh...)
			imported = 0
		} else {
			for _, cl := range fresh {
				cl.finish(nil)
			}
		}
	}
	b.each(len(alone), func(i int) { b.putAlone(alone[i]) })
	for _, cl := range again {
		b.putAlone(cl)
	}
	b.c.log.Debug().Int("agents", len(batch)).Int("imported", imported).Int("alone", len(alone)+len(again)).
		Dur("lookups_ms", lookedUp).Dur("import_ms", importTook).Dur("took_ms", time.Since(start)).Msg("batch of agents' broker users provisioned")
}

// putAlone provisions one agent with its own requests.
func (b *batcher) putAlone(cl *call) {
	ctx, cancel := b.callCtx(cl)
	defer cancel()
	if err := ctx.Err(); err != nil {
		cl.finish(err)
		return
	}
	u := cl.u
	cl.finish(b.c.putAgentAlone(ctx, &u))
}

// each runs fn(0..n-1) on up to parallel goroutines.
func (b *batcher) each(n int, fn func(i int)) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(parallel, n) {
		wg.Go(func() {
			for i := range work {
				fn(i)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// definitions is the part of RabbitMQ's definitions format that provisioning uses.
type definitions struct {
	Users            []defUser            `json:"users,omitempty"`
	Permissions      []defPermission      `json:"permissions,omitempty"`
	TopicPermissions []defTopicPermission `json:"topic_permissions,omitempty"`
}

type defUser struct {
	Name             string `json:"name"`
	PasswordHash     string `json:"password_hash"`
	HashingAlgorithm string `json:"hashing_algorithm"`
	Tags             string `json:"tags"`
}

type defPermission struct {
	User      string `json:"user"`
	VHost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

type defTopicPermission struct {
	User     string `json:"user"`
	VHost    string `json:"vhost"`
	Exchange string `json:"exchange"`
	Write    string `json:"write"`
	Read     string `json:"read"`
}

// importAgents provisions the users of calls, which do not exist yet, in one
// definitions import.
func (c *Client) importAgents(ctx context.Context, calls []*call) error {
	var d definitions
	for _, cl := range calls {
		d.Users = append(d.Users, defUser{Name: cl.u.User, PasswordHash: cl.hash, HashingAlgorithm: hashingAlgorithm})
		d.Permissions = append(d.Permissions, defPermission{User: cl.u.User, VHost: c.vhost,
			Configure: cl.perm.Configure, Write: cl.perm.Write, Read: cl.perm.Read})
		d.TopicPermissions = append(d.TopicPermissions, defTopicPermission{User: cl.u.User, VHost: c.vhost,
			Exchange: cl.perm.TopicExchange, Write: cl.perm.TopicWrite, Read: cl.perm.TopicRead})
	}
	timeout := c.timeout + time.Duration(len(calls))*importTimePerAgent
	if err := c.doTimeout(ctx, timeout, http.MethodPost, "/definitions", d, nil, nil); err != nil {
		return fmt.Errorf("importing %d agents' users, permissions and topic permissions: %w", len(calls), err)
	}
	return nil
}
