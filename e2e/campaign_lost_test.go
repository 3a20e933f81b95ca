//go:build cgo && linux

package e2e_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// A SIGKILL can leave a SoftHSM2 token's token.object empty: SoftHSM2 rewrites that file
// in place, truncating it first, in C_InitToken, C_InitPIN and C_SetPIN. The token then
// shows as uninitialised and without a serial (SoftHSM2 keeps the serial in that file),
// its label, PINs and objects lost; a job naming it waits for its serial until its
// deadline. That is the file store's doing, not the agent's, and nothing over PKCS#11
// brings the token back. The campaign handles it as an operator does: a lane whose job
// has waited for its token past lostTokenAfter, whose token's serial pkcs11-tool no longer
// lists while a token directory of the agent's store holds an emptied or truncated
// token.object, cancels the job through the API naming the damaged token, removes the
// damaged token from the store (its directory: softhsm2-util cannot name a token without
// serial or label), restarts the agent so that its module reads the store again, and goes
// on from a blank token: the store's free slot, which the lane's next issue initialises
// under a new serial. A token missing for any other reason is left to the verdicts.

// lostTokenAfter is how long a lane's job waits for its token before the lane looks at
// the token's files: a real lane's token is always in the agent's store, so a wait that
// long is not a restart's.
const lostTokenAfter = 10 * time.Second

// lostTokenLooks is how many looks in a row must find the condition: a look that falls
// while SoftHSM2 rewrites the file (truncated for a moment) is not enough.
const lostTokenLooks = 2

// SoftHSM2's token.object: a generation number, then attributes, each its type, its kind
// and its value, integers big-endian in 8 bytes (ObjectFile.cpp, OSAttribute).
const (
	softAttrSerial = 0x8000534a // CKA_OS_TOKENSERIAL
	softAttrFlags  = 0x8000534b // CKA_OS_TOKENFLAGS

	softKindBool   = 1
	softKindULong  = 2
	softKindBytes  = 3
	softKindMechs  = 4
	softKindAttrs  = 5
	softULongBytes = 8
)

// readTokenFile reads a SoftHSM2 token.object: whole, it has a serial and flags; empty,
// cut short or without them it is damaged, and why says how (with the serial when the
// part left holds it).
func readTokenFile(path string) (serial string, why string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	if len(b) == 0 {
		return "", "empty", nil
	}
	cut := fmt.Sprintf("cut short at %d bytes", len(b))
	ulong := func() (uint64, bool) {
		if len(b) < softULongBytes {
			return 0, false
		}
		v := binary.BigEndian.Uint64(b)
		b = b[softULongBytes:]
		return v, true
	}
	if _, ok := ulong(); !ok { // the generation
		return "", cut, nil
	}
	hasFlags := false
	for len(b) > 0 {
		typ, ok1 := ulong()
		kind, ok2 := ulong()
		if !ok1 || !ok2 {
			return serial, cut, nil
		}
		switch kind {
		case softKindBool:
			if len(b) < 1 {
				return serial, cut, nil
			}
			b = b[1:]
		case softKindULong:
			if _, ok := ulong(); !ok {
				return serial, cut, nil
			}
			hasFlags = hasFlags || typ == softAttrFlags
		case softKindBytes:
			n, ok := ulong()
			if !ok || uint64(len(b)) < n {
				return serial, cut, nil
			}
			if typ == softAttrSerial {
				serial = string(b[:n])
			}
			b = b[n:]
		case softKindMechs, softKindAttrs:
			return serial, fmt.Sprintf("holds an attribute of kind %d, which a token file does not", kind), nil
		default:
			return serial, fmt.Sprintf("unreadable: attribute kind %d", kind), nil
		}
	}
	if serial == "" || !hasFlags {
		return serial, "without its serial or flags", nil
	}
	return serial, "", nil
}

// damagedFile is a token directory whose token.object is damaged.
type damagedFile struct {
	why    string
	serial string // the serial the part left holds, or the one the directory had when last seen whole; "" when unknown
}

// tokenFiles reads every token directory of the store: the serials of the whole ones,
// and the damaged ones.
func (s softStore) tokenFiles() (whole map[string]string, damaged map[string]damagedFile, err error) {
	entries, err := os.ReadDir(s.tokens)
	if err != nil {
		return nil, nil, err
	}
	whole, damaged = map[string]string{}, map[string]damagedFile{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(s.tokens, e.Name())
		serial, why, err := readTokenFile(filepath.Join(dir, "token.object"))
		if err != nil {
			return nil, nil, err
		}
		if why != "" {
			damaged[dir] = damagedFile{why: why, serial: serial}
		} else {
			whole[serial] = dir
		}
	}
	return whole, damaged, nil
}

// noteTokens reads the agent's store and remembers which directory holds which serial:
// once a token file is emptied, that is all that says whose it was.
func (a *agentProc) noteTokens() (whole map[string]string, damaged map[string]damagedFile, err error) {
	whole, damaged, err = a.store.tokenFiles()
	if err != nil {
		return nil, nil, err
	}
	a.dirsMu.Lock()
	defer a.dirsMu.Unlock()
	if a.dirs == nil {
		a.dirs = map[string]string{}
	}
	for serial, dir := range whole {
		a.dirs[dir] = serial
	}
	for dir, f := range damaged {
		if f.serial == "" {
			f.serial = a.dirs[dir]
			damaged[dir] = f
		}
	}
	return whole, damaged, nil
}

// lostTokenFile says whether the token with the serial is gone from the agent's store
// because a kill emptied its token.object: pkcs11-tool lists no token with the serial, no
// whole token file holds it, and a token directory holds a damaged token.object that was
// the serial's (it holds the serial still, or held it when last seen whole) or whose
// serial is unknown (a token emptied as it was first initialised was never seen whole;
// the first such directory is taken). It returns that directory, or why the condition
// does not hold.
func lostTokenFile(a *agentProc, serial string) (dir, why string, err error) {
	if serial == "" {
		return "", "the job names no token", nil
	}
	out, err := a.store.p11("--list-slots")
	if err != nil {
		return "", "", err
	}
	for _, sl := range parseSlots(out) {
		if sl.serial == serial {
			return "", "pkcs11-tool lists it", nil
		}
	}
	whole, damaged, err := a.noteTokens()
	if err != nil {
		return "", "", err
	}
	if d, ok := whole[serial]; ok {
		return "", "its token file in " + d + " is whole", nil
	}
	var unknown []string
	for d, f := range damaged {
		switch f.serial {
		case serial:
			return d, "", nil
		case "":
			unknown = append(unknown, d)
		}
	}
	if len(unknown) == 0 {
		return "", "no token file in the store is damaged but other tokens': the token went some other way", nil
	}
	slices.Sort(unknown)
	return unknown[0], "", nil
}

// replacement is a lane's token a kill emptied, and what the campaign did about it.
type replacement struct {
	lane   int
	serial string // the lost token's
	dir    string // its directory, removed
	why    string // how its token.object was damaged
	job    string // the job cancelled
	reason string // the cancel's reason
}

// lostWatch follows one job's wait for its token.
type lostWatch struct {
	since time.Time // when the job was first seen waiting; zero while it is not
	next  time.Time // the next look at the token's files
	looks int       // looks in a row that found the condition
}

// waitingForToken says whether the job's agent reports it waiting for its token.
func waitingForToken(d client.JobDetail) bool {
	if d.State != jobs.StateRunning || len(d.Steps) == 0 {
		return false
	}
	last := d.Steps[len(d.Steps)-1]
	return last.Attempt == d.Attempt && last.Step == jobs.StepWaitingForToken
}

// watchLost looks, while the job waits for its token on a real agent, whether the
// token's file was emptied, and then replaces the token. It says whether it did.
func (l *lane) watchLost(w *lostWatch, rec *jobRecord, d client.JobDetail) (bool, error) {
	if l.agent == nil || rec.lost != nil {
		return false, nil
	}
	now := time.Now()
	if !waitingForToken(d) {
		*w = lostWatch{}
		return false, nil
	}
	if w.since.IsZero() {
		w.since, w.next = now, now.Add(lostTokenAfter)
	}
	if now.Before(w.next) {
		return false, nil
	}
	w.next = now.Add(time.Second)
	dir, _, err := lostTokenFile(l.agent, d.TokenSerial)
	if err != nil || dir == "" {
		w.looks = 0
		return false, nil //nolint:nilerr // not lost (or not readable now): the job waits on, as before
	}
	if w.looks++; w.looks < lostTokenLooks {
		return false, nil
	}
	return true, l.replaceLost(rec, d, dir)
}

// replaceLost does what the help desk does for a token a kill emptied: it cancels the job
// waiting for it, naming the token, then replaces the token with the agent stopped.
func (l *lane) replaceLost(rec *jobRecord, d client.JobDetail, dir string) error {
	c := l.c
	_, damaged, err := l.agent.noteTokens()
	if err != nil {
		return err
	}
	why := damaged[dir].why
	r := &replacement{lane: l.n, serial: d.TokenSerial, dir: dir, why: why, job: rec.id,
		reason: fmt.Sprintf("token %s is lost: a kill mid-write left its SoftHSM2 token file (%s) %s; the token is replaced",
			d.TokenSerial, filepath.Join(dir, "token.object"), why)}
	err = c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
		_, err := cl.Cancel(ctx, rec.id, r.reason)
		return err
	})
	if err != nil {
		var now client.JobDetail
		if gerr := c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
			var err error
			now, err = cl.GetJob(ctx, rec.id)
			return err
		}); gerr != nil || now.State != jobs.StateCancelled {
			return fmt.Errorf("cancelling the job waiting for lost token %s: %w", d.TokenSerial, err)
		}
	}
	c.mu.Lock()
	rec.lost = r
	c.mu.Unlock()
	err = c.restartAgent(l.agent, func() error {
		// With the module unloaded, the token must still be lost; then it goes.
		whole, damaged, err := l.agent.noteTokens()
		if err != nil {
			return err
		}
		if f, ok := damaged[dir]; !ok || whole[d.TokenSerial] != "" || (f.serial != "" && f.serial != d.TokenSerial) {
			return fmt.Errorf("token %s: the token file in %s is no longer damaged once the agent stopped", d.TokenSerial, dir)
		}
		return os.RemoveAll(dir)
	})
	if err != nil {
		return fmt.Errorf("replacing lost token %s: %w", d.TokenSerial, err)
	}
	c.mu.Lock()
	c.replaced = append(c.replaced, r)
	c.mu.Unlock()
	c.t.Logf("lane %d (%s): %s; job %s cancelled", l.n, l.holder, r.reason, rec.id)
	return nil
}

// agentRestart is work done on an agent's store while the agent is stopped, in the test's
// goroutine (which the fault injector runs in: a restart and a fault never overlap).
type agentRestart struct {
	a    *agentProc
	fn   func() error
	done chan error
}

// restartAgent stops the agent as a service manager does (SIGTERM), runs fn while no
// process has its store's module loaded, and starts it again.
func (c *campaign) restartAgent(a *agentProc, fn func() error) error {
	r := agentRestart{a: a, fn: fn, done: make(chan error, 1)}
	select {
	case c.restarts <- r:
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

// serveRestart does one restart asked for by restartAgent; test goroutine only.
func (c *campaign) serveRestart(r agentRestart) {
	r.a.stop()
	err := r.fn()
	queue := agentQueue(c.t, r.a.id)
	eventually(c.t, "the broker to drop the stopped agent's consumer", func() (bool, string) {
		_, consumers := c.broker.QueueCounts(c.t, queue)
		return consumers == 0, fmt.Sprintf("%d consumers on %s", consumers, queue)
	})
	if serr := r.a.start(); serr != nil {
		err = errors.Join(err, serr)
	}
	r.done <- err
}

// checkLost holds the replaced tokens to what the replacement did: the lost serial is
// gone from the agent's store. It also names the damaged token files left in the stores
// (no lane's job waited for them): a note, not a problem, as any token those files cost a
// lane is reported by the verdicts already.
func (c *campaign) checkLost() (problems []string, left []string) {
	c.mu.Lock()
	replaced := slices.Clone(c.replaced)
	c.mu.Unlock()
	for _, r := range replaced {
		a := c.lanes[r.lane].agent
		out, err := a.store.p11("--list-slots")
		if err != nil {
			problems = append(problems, fmt.Sprintf("agent %s: %v", a.id, err))
			continue
		}
		for _, sl := range parseSlots(out) {
			if sl.serial == r.serial {
				problems = append(problems, fmt.Sprintf("agent %s: token %s, replaced as lost (lane %d), is listed again", a.id, r.serial, r.lane))
			}
		}
	}
	for _, a := range c.agents {
		_, damaged, err := a.store.tokenFiles()
		if err != nil {
			problems = append(problems, fmt.Sprintf("agent %s: reading its token files: %v", a.id, err))
			continue
		}
		for dir, f := range damaged {
			left = append(left, fmt.Sprintf("agent %s: %s (%s)", a.id, dir, f.why))
		}
	}
	slices.Sort(left)
	return problems, left
}

// replacedSummary is the summary's line on replaced tokens.
func (c *campaign) replacedSummary() string {
	lanes := make([]string, 0, len(c.replaced))
	for _, r := range c.replaced {
		lanes = append(lanes, fmt.Sprintf("%d (token %s, job %s)", r.lane, r.serial, r.job))
	}
	return fmt.Sprintf("%d (a kill emptied SoftHSM2's token file), lanes %v", len(c.replaced), lanes)
}
