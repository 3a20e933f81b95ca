package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// SQLite copies the WAL's pages back into the database file in a checkpoint. Left to
// itself it does so in the commit that takes the WAL past 1,000 pages, on the
// connection that committed: the writer's, the only one, which then writes the pages
// and syncs the database file (4 to 30 ms under the fleet simulator's job load, about
// one commit in 25) while every transaction waits behind it. The checkpoints run
// instead on a connection of their own, walCheckpointEvery after a commit (the commits
// meanwhile share it), PASSIVE: they never wait for, nor hold up, the writer or the
// readers. The writer's commits still sync the WAL each (synchronous=FULL), so nothing
// about durability changes. Should the checkpointer fall behind, the writer checkpoints
// itself past walWriterCheckpointPages as before.
const walWriterCheckpointPages = 10000 // 40 MB of 4 KiB pages

// walCheckpointEvery is a variable for the tests.
var walCheckpointEvery = time.Second

// walCheckpointer runs the checkpoints of a SQLite store.
type walCheckpointer struct {
	db    *sql.DB // a connection of its own
	every time.Duration
	log   zerolog.Logger
	kick  chan struct{}

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

func newWALCheckpointer(db *sql.DB, every time.Duration, log zerolog.Logger) *walCheckpointer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &walCheckpointer{db: db, every: every, log: log, kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go c.run(ctx)
	return c
}

// committed says that the WAL has grown; it never blocks.
func (c *walCheckpointer) committed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *walCheckpointer) run(ctx context.Context) {
	defer close(c.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		// The commits of the wait share one checkpoint.
		t := time.NewTimer(c.every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := c.checkpoint(ctx); err != nil && ctx.Err() == nil {
			// The next commit asks again; the writer's own checkpoint is the backstop.
			c.log.Warn().Err(err).Msg("sqlite checkpoint failed")
		}
	}
}

// checkpoint copies what it can of the WAL into the database file.
func (c *walCheckpointer) checkpoint(ctx context.Context) error {
	var busy, frames, copied int
	if err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
		return fmt.Errorf("store: sqlite: checkpoint: %w", err)
	}
	c.log.Debug().Int("wal_frames", frames).Int("copied", copied).Msg("sqlite checkpoint")
	return nil
}

// stop ends the loop and closes the connection; safe to call twice.
func (c *walCheckpointer) stop() error {
	var err error
	c.stopOnce.Do(func() {
		c.cancel()
		<-c.done
		err = c.db.Close()
	})
	return err
}
