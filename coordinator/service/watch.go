package service

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// WatchRereadEvery is how often a watched job is read again from the store, for changes
// another coordinator sharing the database committed: this one's own changes are seen at
// once, after their commit.
const WatchRereadEvery = 2 * time.Second

// WatchJob follows a job: it checks that by may read it (as GetJob), sends its current
// detail, then the detail after each change, until ctx ends, when it closes the channel.
// Changes this coordinator commits (transitions, decisions, the agent's steps) are sent at
// once; changes by other coordinators within WatchRereadEvery. The channel holds one
// detail: a reader slower than the changes gets the latest, never a backlog, and never
// holds up the operation that made the change.
func (s *Service) WatchJob(ctx context.Context, by Actor, id string) (<-chan JobDetail, error) {
	// Subscribed before the first read, so that a change committed in between is not lost:
	// it is read again below, or after the kick.
	sub := s.watch.subscribe(s, id)
	d, err := s.GetJob(ctx, by, id)
	if err != nil {
		s.watch.unsubscribe(sub)
		return nil, err
	}
	s.watch.mu.Lock()
	if sub.last.version <= d.Version { // the feed may have offered a newer read already
		sub.offer(d, true)
	}
	s.watch.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.watch.unsubscribe(sub)
	}()
	return sub.out, nil
}

// watchers fans job changes out to the WatchJob subscribers. One feed per watched job
// reads the job when it changes (or every WatchRereadEvery) and offers the detail to each
// of its subscribers; it stops with its last subscriber.
type watchers struct {
	mu    sync.Mutex // guards feeds, and every subscriber's out (sent to and closed under it)
	feeds map[string]*jobFeed
}

type jobFeed struct {
	id   string
	kick chan struct{} // capacity 1: changes while a read runs make one more read
	subs map[*watcher]struct{}
	stop context.CancelFunc
}

type watcher struct {
	feed *jobFeed
	out  chan JobDetail // capacity 1: the latest detail not yet taken
	last jobVersion     // what was last offered
	// closed: unsubscribed; nothing is sent any more.
	closed bool
}

// jobVersion tells whether a detail shows something new: the job row's version moves
// with every transition, step and edit; decisions, presence and what the dispatcher
// learnt of the attempt do not move it.
type jobVersion struct {
	version       int64
	decisions     int
	online        bool
	waiting, said string
}

func versionOf(d JobDetail) jobVersion {
	return jobVersion{version: d.Version, decisions: len(d.Decisions), online: d.AgentOnline, waiting: d.WaitingReason, said: d.AgentResult}
}

// changed tells the watchers of these jobs that they changed; called after the commit.
func (w *watchers) changed(ids ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		if f, ok := w.feeds[id]; ok {
			select {
			case f.kick <- struct{}{}:
			default: // a read is already due
			}
		}
	}
}

func (w *watchers) subscribe(s *Service, id string) *watcher {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.feeds == nil {
		w.feeds = map[string]*jobFeed{}
	}
	f, ok := w.feeds[id]
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		f = &jobFeed{id: id, kick: make(chan struct{}, 1), subs: map[*watcher]struct{}{}, stop: cancel}
		w.feeds[id] = f
		go s.runFeed(ctx, f) // stopped by unsubscribe, with the feed's last subscriber
	}
	sub := &watcher{feed: f, out: make(chan JobDetail, 1)}
	f.subs[sub] = struct{}{}
	return sub
}

func (w *watchers) unsubscribe(sub *watcher) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sub.closed {
		return
	}
	sub.closed = true
	close(sub.out)
	f := sub.feed
	delete(f.subs, sub)
	if len(f.subs) == 0 {
		f.stop()
		delete(w.feeds, f.id)
	}
}

// offer hands d to the subscriber unless it shows nothing new, replacing a detail it
// has not taken yet. force offers d whatever it shows (the first one). The caller holds
// the watchers' lock.
func (sub *watcher) offer(d JobDetail, force bool) {
	v := versionOf(d)
	if sub.closed || (!force && v == sub.last) {
		return
	}
	sub.last = v
	select {
	case <-sub.out: // the reader has not taken the previous one: it gets this one instead
	default:
	}
	sub.out <- d // the only sender, under the lock: there is room now
}

// runFeed reads the job at each kick, and every WatchRereadEvery, and offers what it read
// to the feed's subscribers, until the last one leaves.
func (s *Service) runFeed(ctx context.Context, f *jobFeed) {
	t := time.NewTicker(WatchRereadEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-t.C:
		}
		j, err := s.st.GetJob(ctx, f.id)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
				s.log.Warn().Err(err).Str("job", f.id).Msg("watching a job: reading it")
			}
			continue
		}
		d, err := s.jobDetail(ctx, j)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn().Err(err).Str("job", f.id).Msg("watching a job: reading its detail")
			}
			continue
		}
		s.watch.mu.Lock()
		for sub := range f.subs {
			sub.offer(d, false)
		}
		s.watch.mu.Unlock()
	}
}

// jobsChanged records, in the transaction, that jobs changed: their watchers are told
// once it commits.
func (t *txn) jobsChanged(ids ...string) {
	if len(ids) == 0 {
		return
	}
	t.events = append(t.events, func(Observer) { t.s.watch.changed(ids...) })
}

// AddJobStep records an agent's step (store.Tx.AddJobStep) and tells the job's watchers
// once the transaction commits.
func (jt *JobTx) AddJobStep(ctx context.Context, st store.JobStep, p jobs.Progress, expectedVersion int64) (store.Job, error) {
	j, err := jt.Tx.AddJobStep(ctx, st, p, expectedVersion)
	if err == nil {
		jt.t.jobsChanged(st.JobID)
	}
	return j, err
}
