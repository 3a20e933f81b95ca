package brokeradmin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// newAgents makes n agents as newAgent does, deleting their users at the end.
func newAgents(t testing.TB, n int) []AgentUser {
	t.Helper()
	us := make([]AgentUser, n)
	users := make([]string, n)
	for i := range us {
		id := testenv.UniqueUser("ws-")
		users[i], _ = protocol.AgentUser(id)
		us[i] = AgentUser{AgentID: id, User: users[i], Password: newPassword(t)}
	}
	deleteUsersAtEnd(t, users...)
	return us
}

// listed returns what GET path lists about the agents us (entries whose field key
// names one of their users), each as JSON with the agent's ID replaced by
// "ID", so that the entries of different agents compare; sorted.
func listed(t testing.TB, path, key string, us []AgentUser) []string {
	t.Helper()
	var entries []map[string]any
	if err := admin(t).do(context.Background(), http.MethodGet, path, nil, &entries, nil); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, u := range us {
		ids[u.User] = u.AgentID
	}
	var out []string
	for _, e := range entries {
		name, _ := e[key].(string)
		id, ok := ids[name]
		if !ok {
			continue
		}
		b, _ := json.Marshal(e) // sorted keys
		out = append(out, strings.ReplaceAll(string(b), id, "ID"))
	}
	slices.Sort(out)
	return out
}

// counting is a transport that counts requests by method and path prefix.
type counting struct {
	next http.RoundTripper
	mu   sync.Mutex // guards n
	n    map[string]int
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	kind := r.Method + " " + strings.SplitN(strings.TrimPrefix(r.URL.Path, "/api/"), "/", 2)[0]
	c.n[kind]++
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *counting) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

func (c *counting) count(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[kind]
}

// TestBulkSameAsPutAgent: 500 agents provisioned together get, in a handful of imports,
// exactly what 100 agents provisioned one by one get (the API's permission and topic
// permission lists, with the agent ID abstracted, are the same set, each entry exactly
// protocol.AgentPermissions), and users without tags whose stored hash is their
// password's, with which they log in. The guest user's permissions on the vhost are
// untouched.
func TestBulkSameAsPutAgent(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	counter := &counting{next: http.DefaultTransport}
	c := newClient(t, b.VHost, func(cfg *Config) {
		cfg.HTTPClient = &http.Client{Transport: counter}
		cfg.BatchWait = time.Second // all 500 in one import, however slowly the goroutines start
	})
	guestBefore := listed(t, apiPath("vhosts", b.VHost, "permissions"), "user", []AgentUser{{AgentID: "guest", User: "guest"}})

	bulk := newAgents(t, 500)
	if err := c.PutAgents(ctx, bulk); err != nil {
		t.Fatal(err)
	}
	if n := counter.count("POST definitions"); n < 1 || n > 2 || counter.count("PUT users") != 0 {
		t.Fatalf("%d imports and %d users put one by one for 500 agents, want the import to carry them", n, counter.count("PUT users"))
	}
	t.Logf("requests: %v", counter.snapshot())

	// The reference: agents provisioned alone.
	alone := newAgents(t, 100)
	var wg sync.WaitGroup
	errs := make([]error, len(alone))
	for i := range alone {
		wg.Go(func() { errs[i] = c.putAgentAlone(ctx, &alone[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	for _, what := range []struct{ path, key string }{
		{apiPath("vhosts", b.VHost, "permissions"), "user"},
		{apiPath("vhosts", b.VHost, "topic-permissions"), "user"},
	} {
		got, want := slices.Compact(listed(t, what.path, what.key, bulk)), slices.Compact(listed(t, what.path, what.key, alone))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: provisioned together %v, alone %v", what.path, got, want)
		}
	}
	for i, u := range bulk {
		if i%50 != 0 {
			continue
		}
		perms, topic := permissionsOf(t, b.VHost, u.User)
		wantPerms, wantTopic := wantPermissions(t, b.VHost, u)
		if !reflect.DeepEqual(perms, wantPerms) || !reflect.DeepEqual(topic, wantTopic) {
			t.Errorf("%s: permissions %v %v, want %v %v", u.User, perms, topic, wantPerms, wantTopic)
		}
	}
	if got := listed(t, apiPath("vhosts", b.VHost, "permissions"), "user", []AgentUser{{AgentID: "guest", User: "guest"}}); !reflect.DeepEqual(got, guestBefore) {
		t.Errorf("guest's permissions changed: %v, were %v", got, guestBefore)
	}

	// Users: no tags, the password's hash; queues: as the coordinator declares them.
	var users []struct {
		Name             string   `json:"name"`
		Tags             []string `json:"tags"`
		PasswordHash     string   `json:"password_hash"`
		HashingAlgorithm string   `json:"hashing_algorithm"`
	}
	// Listing every user fails now and then with a 500 while other tests delete theirs.
	for try := 1; ; try++ {
		err := admin(t).do(ctx, http.MethodGet, "/users", nil, &users, nil)
		if err == nil {
			break
		}
		if try == 5 {
			t.Fatal(err)
		}
	}
	password := map[string]string{}
	for _, u := range bulk {
		password[u.User] = u.Password
	}
	found := 0
	for _, u := range users {
		p, ok := password[u.Name]
		if !ok {
			continue
		}
		found++
		raw, err := base64.StdEncoding.DecodeString(u.PasswordHash)
		if len(u.Tags) != 0 || u.HashingAlgorithm != hashingAlgorithm || err != nil || len(raw) != 36 || saltedHash(raw[:4], p) != u.PasswordHash {
			t.Errorf("user %s: tags %v, %s %s: want no tags and the salted SHA-256 of its password", u.Name, u.Tags, u.HashingAlgorithm, u.PasswordHash)
		}
	}
	if found != len(bulk) {
		t.Errorf("%d of the %d users exist", found, len(bulk))
	}
	// A sample logs in.
	mustDial(t, b.VHost, bulk[0].User, bulk[0].Password)
	mustDial(t, b.VHost, bulk[499].User, bulk[499].Password)
}

// TestBatchEachOwnResult: calls gathered into one batch each get their own result. A
// bad agent (the broker refuses its password hash, failing the import) fails alone; an
// operator's user and the management user are refused and untouched; an existing agent
// user loses a topic permission on another exchange; two calls for one user both
// succeed, the later password winning; a bystander's permissions are untouched.
func TestBatchEachOwnResult(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	a := admin(t)
	good := newAgents(t, 6)
	bad, existing, twice, bystander := good[0], good[1], good[2], good[3]
	good = good[4:]
	badPassword := bad.Password

	// An operator, an existing agent user with more than it should have, a bystander.
	operator := testenv.UniqueUser("operator-")
	deleteUsersAtEnd(t, operator)
	opPassword := newPassword(t)
	if err := a.do(ctx, http.MethodPut, apiPath("users", operator), map[string]string{"password": opPassword, "tags": "management"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	seed := newClient(t, b.VHost)
	if err := seed.PutAgents(ctx, []AgentUser{existing, bystander}); err != nil {
		t.Fatal(err)
	}
	b.SetTopicPermissions(t, existing.User, "amq.topic", ".*", ".*")
	bystanderPerms, bystanderTopic := permissionsOf(t, b.VHost, bystander.User)

	calls := []AgentUser{
		good[0], bad, existing, good[1], twice,
		{AgentID: twice.AgentID, User: twice.User, Password: newPassword(t)}, // swapped to the end below
		{AgentID: testenv.UniqueUser("ws-"), User: operator, Password: newPassword(t)},
		{AgentID: testenv.UniqueUser("ws-"), User: "guest", Password: newPassword(t)},
	}
	c := newClient(t, b.VHost, func(cfg *Config) {
		cfg.BatchWait = time.Minute // the batch closes when full
		cfg.BatchMax = len(calls)
	})
	c.importMin = 1 // this batch of four new users is imported
	busy(c)
	c.hash = func(p string) string {
		if p == badPassword {
			return "not base64!"
		}
		return passwordHash(p)
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	// The second call for the twice-listed user comes after all others.
	last := len(calls) - 1
	calls[last], calls[5] = calls[5], calls[last]
	for i, u := range calls[:last] {
		wg.Go(func() { errs[i] = c.PutAgent(ctx, u) })
	}
	waitQueued(t, c, last)
	wg.Go(func() { errs[last] = c.PutAgent(ctx, calls[last]) })
	wg.Wait()

	for i, err := range errs {
		var want error
		switch i {
		case 1:
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(err.Error(), bad.AgentID) {
				t.Errorf("the bad agent: %v, want the broker's 400 naming it", err)
			}
			continue
		case 5, 6:
			want = ErrNotAgentUser
		}
		if !errors.Is(err, want) {
			t.Errorf("call %d (%s): %v, want %v", i, calls[i].User, err, want)
		}
		var ae *AgentError
		if err != nil && (!errors.As(err, &ae) || ae.AgentID != calls[i].AgentID) {
			t.Errorf("call %d: %v is not an *AgentError naming agent %s", i, err, calls[i].AgentID)
		}
	}
	for _, u := range []AgentUser{good[0], good[1], existing, twice} {
		perms, topic := permissionsOf(t, b.VHost, u.User)
		wantPerms, wantTopic := wantPermissions(t, b.VHost, u)
		if !reflect.DeepEqual(perms, wantPerms) || !reflect.DeepEqual(topic, wantTopic) {
			t.Errorf("%s: permissions %v %v, want %v %v", u.User, perms, topic, wantPerms, wantTopic)
		}
	}
	mustDial(t, b.VHost, good[1].User, good[1].Password)
	mustDial(t, b.VHost, twice.User, calls[last].Password) // the later call's password
	if perms, topic := permissionsOf(t, b.VHost, bystander.User); !reflect.DeepEqual(perms, bystanderPerms) || !reflect.DeepEqual(topic, bystanderTopic) {
		t.Errorf("the bystander's permissions changed: %v %v", perms, topic)
	}
	var op struct {
		Tags []string `json:"tags"`
	}
	if err := a.do(ctx, http.MethodGet, apiPath("users", operator), nil, &op, nil); err != nil || !slices.Equal(op.Tags, []string{"management"}) {
		t.Errorf("the operator's user: %+v, %v", op, err)
	}
	opClient := newClient(t, b.VHost, func(cfg *Config) { cfg.User, cfg.Password = operator, opPassword })
	if err := opClient.do(ctx, http.MethodGet, "/whoami", nil, nil, nil); err != nil {
		t.Errorf("the operator's login: %v", err)
	}
}

// TestBatchCancelAndClose: a caller waiting for its batch returns when its context ends;
// Close fails the calls still waiting with ErrClosed, returns once the batcher has
// stopped, and later calls fail at once; nothing was provisioned.
func TestBatchCancelAndClose(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	c := newClient(t, b.VHost, func(cfg *Config) { cfg.BatchWait = time.Hour })
	busy(c)
	us := newAgents(t, 2)

	ctx, cancel := context.WithCancel(testenv.Context(t))
	cancelled := make(chan error, 1)
	go func() { cancelled <- c.PutAgent(ctx, us[0]) }()
	waiting := make(chan error, 1)
	go func() { waiting <- c.PutAgent(testenv.Context(t), us[1]) }()
	waitQueued(t, c, 2)
	cancel()
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), us[0].AgentID) {
			t.Errorf("cancelled caller: %v, want context.Canceled naming its agent", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled caller still waits after 5 s")
	}

	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close has not returned after 5 s")
	}
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Errorf("waiting caller after Close: %v, want ErrClosed", err)
	}
	c.mu.Lock()
	if c.batch != nil {
		t.Error("the client still has its batcher")
	}
	c.mu.Unlock()
	if err := c.PutAgent(testenv.Context(t), us[1]); !errors.Is(err, ErrClosed) {
		t.Errorf("PutAgent after Close: %v, want ErrClosed", err)
	}
	if err := c.PutAgents(testenv.Context(t), us); !errors.Is(err, ErrClosed) {
		t.Errorf("PutAgents after Close: %v, want ErrClosed", err)
	}
	c.Close() // again: harmless
	for _, u := range us {
		if err := admin(t).do(testenv.Context(t), http.MethodGet, apiPath("users", u.User), nil, nil, nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("user %s: %v, want it not created", u.User, err)
		}
	}
}

// busy takes every slot of agents provisioned alone, as many calls in progress would,
// so that the client's next PutAgent calls are batched.
func busy(c *Client) {
	for range cap(c.alone) {
		c.alone <- struct{}{}
	}
}

// waitQueued waits until n calls wait in the client's batcher.
func waitQueued(t testing.TB, c *Client, n int) {
	t.Helper()
	poll(t, 10*time.Second, func() bool {
		c.mu.Lock()
		bt := c.batch
		c.mu.Unlock()
		return bt != nil && bt.queued() >= n
	}, func() string { return fmt.Sprintf("%d calls did not reach the batcher within 10 s", n) })
}

// TestFewCallsAlone: a call while few are in progress, and a batch too small to repay
// an import, are provisioned with each agent's own requests.
func TestFewCallsAlone(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	ctx := testenv.Context(t)
	counter := &counting{next: http.DefaultTransport}
	c := newClient(t, b.VHost, func(cfg *Config) { cfg.HTTPClient = &http.Client{Transport: counter} })
	us := newAgents(t, 3)
	if err := c.PutAgent(ctx, us[0]); err != nil {
		t.Fatal(err)
	}
	if n := counter.count("PUT users"); n != 1 {
		t.Errorf("%d users put, want 1", n)
	}
	c.mu.Lock()
	started := c.batch != nil
	c.mu.Unlock()
	if started {
		t.Error("a lone call started the batcher")
	}
	busy(c)
	if err := c.PutAgents(ctx, us[1:]); err != nil {
		t.Fatal(err)
	}
	if counter.count("POST definitions") != 0 || counter.count("PUT users") != 3 {
		t.Errorf("requests %v, want each agent's own", counter.snapshot())
	}
	for _, u := range us {
		perms, topic := permissionsOf(t, b.VHost, u.User)
		wantPerms, wantTopic := wantPermissions(t, b.VHost, u)
		if !reflect.DeepEqual(perms, wantPerms) || !reflect.DeepEqual(topic, wantTopic) {
			t.Errorf("%s: permissions %v %v, want %v %v", u.User, perms, topic, wantPerms, wantTopic)
		}
	}
}
