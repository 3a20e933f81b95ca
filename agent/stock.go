package agent

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// stock keeps the token inventory the hello carries. Taking stock is a PKCS#11 scan of
// every token (certificates and keys included): seconds on real tokens with RSA keys. It
// runs in its own goroutine (run), never on the send path, so that a CSR or a result
// leaves as soon as it is journalled whatever the tokens are doing; the sender reads the
// latest stocktaking, which costs a lock held for two assignments.
//
// Requests (a token inserted, removed or changed, a new connection) coalesce: any number
// made while a stocktaking runs bring one more after it.
type stock struct {
	scan    func(ctx context.Context) ([]protocol.Token, error)
	log     zerolog.Logger
	backoff amqp.Backoff
	wanted  chan struct{} // one slot: another stocktaking is wanted
	updated chan struct{} // one slot: a stocktaking ended; the sender's wake-up
	have    chan struct{} // closed when the first stocktaking ended

	mu      sync.Mutex // guards tokens and version
	tokens  []protocol.Token
	version uint64 // counts stocktakings; 0 before the first
}

func newStock(scan func(ctx context.Context) ([]protocol.Token, error), log zerolog.Logger, backoff amqp.Backoff) *stock {
	return &stock{
		scan: scan, log: log, backoff: backoff,
		wanted: make(chan struct{}, 1), updated: make(chan struct{}, 1), have: make(chan struct{}),
	}
}

// request asks for a new stocktaking without waiting for it.
func (s *stock) request() { signal(s.wanted) }

// latest returns the tokens of the last stocktaking and its number (0: none ended yet).
// The slice is shared: callers only read it.
func (s *stock) latest() ([]protocol.Token, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens, s.version
}

func (s *stock) set(toks []protocol.Token) {
	s.mu.Lock()
	s.tokens = toks
	s.version++
	first := s.version == 1
	s.mu.Unlock()
	if first {
		close(s.have)
	}
	signal(s.updated)
}

// run takes stock at once, then whenever asked, until ctx ends. A stocktaking that fails
// is tried again after a backoff, or at the next request.
func (s *stock) run(ctx context.Context) {
	for failures := 0; ; {
		// A request made before this stocktaking starts is answered by it.
		select {
		case <-s.wanted:
		default:
		}
		toks, err := s.scan(ctx)
		var retry *time.Timer
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			delay := s.backoff.Delay(failures)
			failures++
			s.log.Warn().Err(err).Dur("retry_in_ms", delay).Msg("taking stock of the tokens failed; retrying")
			retry = time.NewTimer(delay)
		default:
			failures = 0
			s.set(toks)
		}
		select {
		case <-ctx.Done():
		case <-s.wanted:
		case <-timerC(retry):
		}
		if retry != nil {
			retry.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}
