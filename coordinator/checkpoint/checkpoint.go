// Package checkpoint signs checkpoints of the coordinator's audit chain head
// (audit.Checkpoint): with a key of the coordinator's own, kept in the data directory and
// not in the database, periodically and on demand. Each checkpoint is kept in the store,
// for auditors to list, and sent to the configured sinks (syslog), so that copies live
// where an intruder holding the database does not reach.
//
// Before signing, the checkpointer checks that the log still follows the last checkpoint
// it kept (the entry at its sequence number carries its hash, the entries since chain
// onto it). A log that does not is not signed: the refusal is logged at error level and
// returned, and stays an alarm at every later attempt.
package checkpoint

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// DefaultInterval is how often a checkpoint is made when the configuration does not say.
const DefaultInterval = time.Hour

// Sink receives every new checkpoint, after it is kept in the store.
type Sink interface {
	Send(ctx context.Context, c audit.Checkpoint) error
}

// Options configure a Checkpointer.
type Options struct {
	Store store.Store        // required
	Key   ed25519.PrivateKey // required: LoadOrCreateKey
	// Interval between periodic checkpoints; 0 is DefaultInterval.
	Interval time.Duration
	Sinks    []Sink
	Logger   zerolog.Logger
	Now      func() time.Time // nil: time.Now
}

// Checkpointer makes checkpoints. It is safe for concurrent use.
type Checkpointer struct {
	st       store.Store
	key      ed25519.PrivateKey
	pub      ed25519.PublicKey
	interval time.Duration
	sinks    []Sink
	log      zerolog.Logger
	now      func() time.Time

	mu sync.Mutex // serialises Make, so that each checkpoint is checked against the one before
}

// New returns a Checkpointer; it makes nothing before Make or Run.
func New(o Options) (*Checkpointer, error) {
	if o.Store == nil {
		return nil, errors.New("checkpoint: no store")
	}
	if len(o.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("checkpoint: no Ed25519 key")
	}
	if o.Interval < 0 {
		return nil, fmt.Errorf("checkpoint: negative interval %s", o.Interval)
	}
	c := &Checkpointer{st: o.Store, key: o.Key, pub: o.Key.Public().(ed25519.PublicKey), interval: o.Interval,
		sinks: o.Sinks, log: o.Logger, now: o.Now}
	if c.interval == 0 {
		c.interval = DefaultInterval
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// PublicKey returns the key checkpoints verify with.
func (c *Checkpointer) PublicKey() ed25519.PublicKey { return c.pub }

// List returns the kept checkpoints, newest first.
func (c *Checkpointer) List(ctx context.Context, p store.Page) ([]audit.Checkpoint, string, error) {
	return c.st.ListAuditCheckpoints(ctx, p)
}

// ErrContradicted wraps the *audit.VerifyError of a log that does not follow the last
// checkpoint kept: Make refuses to sign it.
var ErrContradicted = errors.New("the audit log contradicts the last checkpoint")

// Make signs the current head of the chain, keeps the checkpoint and sends it to the
// sinks (a sink's failure is logged, the checkpoint stands).
func (c *Checkpointer) Make(ctx context.Context) (audit.Checkpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	head, err := c.st.AuditHead(ctx)
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	if err := c.followsLast(ctx, head); err != nil {
		return audit.Checkpoint{}, err
	}
	cp, err := audit.SignCheckpoint(c.key, head, c.now())
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	if err := c.st.InTx(ctx, func(tx store.Tx) error { return tx.AddAuditCheckpoint(ctx, cp) }); err != nil {
		return audit.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	c.log.Info().Int64("seq", cp.Seq).Str("hash", cp.Hash).Str("key_id", cp.KeyID).Msg("audit checkpoint signed")
	for _, s := range c.sinks {
		if err := s.Send(ctx, cp); err != nil {
			c.log.Warn().Err(err).Int64("seq", cp.Seq).Msg("audit checkpoint not delivered to a sink")
		}
	}
	return cp, nil
}

// followsLast checks the log against the newest checkpoint this key signed: only the
// entries since are read, so a periodic checkpoint costs what was appended meanwhile.
func (c *Checkpointer) followsLast(ctx context.Context, head audit.Head) error {
	kept, _, err := c.st.ListAuditCheckpoints(ctx, store.Page{Limit: 1})
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if len(kept) == 0 {
		return nil
	}
	last := kept[0]
	if err := audit.VerifyCheckpoint(c.pub, last); err != nil {
		// Another key (rotated), or a row written behind the store's back: nothing to
		// hold the log to.
		c.log.Warn().Err(err).Msg("the newest kept audit checkpoint is not this key's; not checking the log against it")
		return nil
	}
	if err := follows(ctx, c.st, last, head); err != nil {
		c.log.Error().Err(err).Msg("the audit log was tampered with: refusing to sign its head")
		return fmt.Errorf("checkpoint: %w: %w", ErrContradicted, err)
	}
	return nil
}

// follows verifies the entries from last's on, up to head, against last: entry last.Seq
// must carry last's hash and the entries after it must chain onto it. The entry before
// last's only seeds the link (it was verified when last was made).
func follows(ctx context.Context, st store.Reader, last audit.Checkpoint, head audit.Head) error {
	from := last.Seq - 1
	var v *audit.Verifier
	seed := func(h audit.Head) {
		v = audit.ResumeVerifier(h)
		v.Expect(last)
	}
	if from < 1 {
		from = 1
		seed(audit.Head{Hash: audit.GenesisHash})
	}
	for e, err := range st.AuditEntries(ctx, from) {
		if err != nil {
			return err
		}
		if e.Seq > head.Seq {
			break
		}
		if v == nil {
			if e.Seq == from {
				seed(audit.Head{Seq: e.Seq, Hash: e.Hash})
				continue
			}
			seed(audit.Head{Seq: from}) // entry from is gone: the gap shows
		}
		if err := v.Add(e); err != nil {
			return err
		}
	}
	if v == nil {
		seed(audit.Head{Seq: from})
	}
	if err := v.Finish(); err != nil {
		return err
	}
	if got := v.Head(); got.Seq != head.Seq || got.Hash != head.Hash {
		return fmt.Errorf("the chain head names entry %d with hash %s, the log ends at entry %d with hash %s", head.Seq, head.Hash, got.Seq, got.Hash)
	}
	return nil
}

// Run makes a checkpoint at once and then every interval until ctx is done. A failure is
// logged and tried again at the next tick.
func (c *Checkpointer) Run(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		if _, err := c.Make(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("periodic audit checkpoint failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
