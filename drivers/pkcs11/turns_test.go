//go:build cgo

package pkcs11_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// overlapWatch stands in front of every Module of a test and counts the calls that reach
// the module on a session of a slot while a call on another session of that slot is
// still in the module.
type overlapWatch struct {
	mu       sync.Mutex // guards the fields below
	slots    map[p11.SessionHandle]uint
	inFlight map[uint]int
	overlaps int
	example  string
}

func newOverlapWatch() *overlapWatch {
	return &overlapWatch{slots: map[p11.SessionHandle]uint{}, inFlight: map[uint]int{}}
}

func (w *overlapWatch) Wrap(b pkcs11.Backend) pkcs11.Backend {
	return &watchedBackend{Backend: b, w: w}
}

// enter notes a call on the session and returns the function that ends it.
func (w *overlapWatch) enter(call string, sh p11.SessionHandle) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	slot, ok := w.slots[sh]
	if !ok {
		return func() {}
	}
	if w.inFlight[slot] > 0 {
		w.overlaps++
		if w.example == "" {
			w.example = fmt.Sprintf("%s on session %d of slot %d", call, sh, slot)
		}
	}
	w.inFlight[slot]++
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.inFlight[slot]--
	}
}

func (w *overlapWatch) result() (int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.overlaps, w.example
}

type watchedBackend struct {
	pkcs11.Backend
	w *overlapWatch
}

func (b *watchedBackend) OpenSession(slotID uint, flags uint) (p11.SessionHandle, error) {
	sh, err := b.Backend.OpenSession(slotID, flags)
	if err == nil {
		b.w.mu.Lock()
		b.w.slots[sh] = slotID
		b.w.mu.Unlock()
	}
	return sh, err
}

func (b *watchedBackend) CloseSession(sh p11.SessionHandle) error {
	defer b.w.enter("CloseSession", sh)()
	return b.Backend.CloseSession(sh)
}

func (b *watchedBackend) GetSessionInfo(sh p11.SessionHandle) (p11.SessionInfo, error) {
	defer b.w.enter("GetSessionInfo", sh)()
	return b.Backend.GetSessionInfo(sh)
}

func (b *watchedBackend) Login(sh p11.SessionHandle, userType uint, pin string) error {
	defer b.w.enter("Login", sh)()
	return b.Backend.Login(sh, userType, pin)
}

func (b *watchedBackend) Logout(sh p11.SessionHandle) error {
	defer b.w.enter("Logout", sh)()
	return b.Backend.Logout(sh)
}

func (b *watchedBackend) DestroyObject(sh p11.SessionHandle, oh p11.ObjectHandle) error {
	defer b.w.enter("DestroyObject", sh)()
	return b.Backend.DestroyObject(sh, oh)
}

func (b *watchedBackend) GetAttributeValue(sh p11.SessionHandle, o p11.ObjectHandle, a []*p11.Attribute) ([]*p11.Attribute, error) {
	defer b.w.enter("GetAttributeValue", sh)()
	return b.Backend.GetAttributeValue(sh, o, a)
}

func (b *watchedBackend) FindObjectsInit(sh p11.SessionHandle, temp []*p11.Attribute) error {
	defer b.w.enter("FindObjectsInit", sh)()
	return b.Backend.FindObjectsInit(sh, temp)
}

func (b *watchedBackend) FindObjects(sh p11.SessionHandle, maxObjects int) ([]p11.ObjectHandle, bool, error) {
	defer b.w.enter("FindObjects", sh)()
	return b.Backend.FindObjects(sh, maxObjects)
}

func (b *watchedBackend) FindObjectsFinal(sh p11.SessionHandle) error {
	defer b.w.enter("FindObjectsFinal", sh)()
	return b.Backend.FindObjectsFinal(sh)
}

func (b *watchedBackend) GenerateKeyPair(sh p11.SessionHandle, m []*p11.Mechanism, public, private []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error) {
	defer b.w.enter("GenerateKeyPair", sh)()
	return b.Backend.GenerateKeyPair(sh, m, public, private)
}

// TestCallsOnOneTokenTakeTurns is what the agent does to one token: a job generates keys
// on it, logged in, while its inventory lists the token's keys and certificates through
// other handles, from the job's Module and from a second Module on the same library.
// SoftHSM2 shares one cipher state between a token's sessions: when they work at once,
// key generation fails (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT) or stores a key the
// job then cannot find. Every call on the token must take its turn, also when the second
// Module names the library by another path to the same file (Debian's SoftHSM2 path is a
// symbolic link).
func TestCallsOnOneTokenTakeTurns(t *testing.T) {
	for _, tc := range []struct{ name, second string }{
		{"same path", testenv.SoftHSMModule},
		{"resolved path", resolvedModule(t)},
	} {
		t.Run(tc.name, func(t *testing.T) { testCallsTakeTurns(t, tc.second) })
	}
}

func testCallsTakeTurns(t *testing.T, secondPath string) {
	ctx := context.Background()
	watch := newOverlapWatch()
	mod, job, _ := loggedIn(t, pkcs11.Options{Wrap: watch.Wrap})
	second := openModuleAt(t, secondPath, pkcs11.Options{Wrap: watch.Wrap})
	readers := []*pkcs11.Token{openToken(t, mod, job.Serial()), openToken(t, second, job.Serial())}

	const keys = 40
	spec, err := pkcs11.ParseKeySpec("ec-p256")
	if err != nil {
		t.Fatal(err)
	}
	var (
		generating         atomic.Bool
		readsWhileGenerate atomic.Int64
		readErrs           = make(chan error, len(readers))
		wg                 sync.WaitGroup
	)
	stop := make(chan struct{})
	started := make(chan struct{}, len(readers))
	for _, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				if _, err := r.Certificates(ctx); err != nil {
					readErrs <- err
					return
				}
				if _, err := r.Keys(ctx); err != nil {
					readErrs <- err
					return
				}
				if generating.Load() {
					readsWhileGenerate.Add(1)
				}
				if i == 0 {
					started <- struct{}{}
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	for range readers {
		<-started
	}

	generating.Store(true)
	var want []string
	for i := range keys {
		id := []byte(fmt.Sprintf("turn-%02d", i))
		want = append(want, fmt.Sprintf("%x", id))
		if _, created, err := job.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "turns", Spec: spec, Usage: pkcs11.UsageSign}); err != nil || !created {
			t.Errorf("key %d: created %v, %v", i, created, err)
		}
	}
	generating.Store(false)
	close(stop)
	wg.Wait()
	close(readErrs)
	for err := range readErrs {
		t.Errorf("listing the token's objects meanwhile: %v", err)
	}

	if n, example := watch.result(); n > 0 {
		t.Errorf("%d calls reached the module while another session of the token was in it (first: %s)", n, example)
	}
	if readsWhileGenerate.Load() == 0 {
		t.Error("no listing ran while the keys were generated: the test proved nothing")
	}
	// Every key is there under its own ID, readable by the job.
	infos, err := job.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range infos {
		if k.Private && k.Public {
			got = append(got, k.ID.String())
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("key pairs on the token %v, want %v", got, want)
	}
	for i := range keys {
		if _, err := job.Key(ctx, []byte(fmt.Sprintf("turn-%02d", i))); err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}
}
