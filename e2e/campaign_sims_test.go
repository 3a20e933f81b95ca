//go:build cgo && linux

package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Simulated agents: the fleet simulator's real agents (journal, executor, sender) in this
// process, sharing a few broker connections, each on one simulated token (the instant
// latency profile: the campaign is about what happens around the token). They are not
// killed (their tokens live in this process's memory), but every coordinator kill and
// every closing of the vhost's connections hits them. Their lanes take simShare of the
// jobs; the checker reads their tokens' objects through the simulated module.
const (
	simPrefix = "sim-"
	simShare  = 0.4
)

// startSims enrols and starts the simulated agents, and gives each a lane.
func (c *campaign) startSims(root string, rng *rand.Rand) {
	t := c.t
	t.Helper()
	n := c.plan.sims
	tokens, err := fleetsim.NewSimTokens(fleetsim.SimTokensConfig{Profile: "instant", PerAgent: 1, Seed: c.seed})
	if err != nil {
		t.Fatal(err)
	}
	c.simTokens = tokens
	api, err := client.New(c.coords[0].url, c.admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Minute)
	defer cancel()
	if _, err := fleetsim.Enrol(ctx, api, simPrefix, n, zerolog.Nop()); err != nil {
		t.Fatalf("enrolling the simulated agents: %v", err)
	}
	c.simLog = newTailBuffer(256 << 10)
	fleet, err := fleetsim.NewFleet(fleetsim.FleetConfig{
		BrokerURL: c.broker.URL, Prefix: simPrefix, Count: n, DataDir: filepath.Join(root, "simulated"),
		Heartbeat: 5 * time.Second, PollInterval: 500 * time.Millisecond, Tokens: tokens,
		Log: zerolog.New(c.simLog).Level(zerolog.WarnLevel).With().Timestamp().Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	fleet.Start(c.ctx)
	c.sims = fleet
	t.Cleanup(fleet.Close)
	eventually(t, "the simulated agents to start", func() (bool, string) {
		if fleet.Failed() > 0 {
			t.Fatalf("simulated agents failed to start: %v", fleet.Errors())
		}
		return fleet.Started() == n, fmt.Sprintf("%d of %d started", fleet.Started(), n)
	})
	for i := range n {
		id := fleetsim.AgentID(simPrefix, i)
		num := len(c.lanes)
		l := &lane{c: c, n: num, agentID: id, holder: fmt.Sprintf("simholder%03d", i), profile: profileOpen, state: tokenBlank,
			rng: rand.New(rand.NewPCG(c.seed, uint64(100+num)))} //nolint:gosec // a replayable plan
		if rng.IntN(2) == 0 {
			l.profile = profileGated
		}
		if _, err := api.CreateUser(ctx, client.UserCreate{Username: l.holder, DisplayName: fmt.Sprintf("Sim Holder %03d", i),
			Organization: org, Email: l.holder + "@acme.example", UPN: l.holder + "@acme.example"}); err != nil {
			t.Fatalf("holder %s: %v", l.holder, err)
		}
		c.lanes = append(c.lanes, l)
	}
}

// checkSimToken holds a simulated token to what its lane expects, reading its objects
// through the simulated module as the agent sees them.
func (c *campaign) checkSimToken(l *lane, want laneExpect, certOf map[string][]client.Certificate) []string {
	where := fmt.Sprintf("simulated agent %s token %s (%s)", l.agentID, want.serial, want.state)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mod, err := c.simTokens.Open(c.simTokens.Modules(l.agentID)[0], pkcs11.Options{})
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	defer func() { _ = mod.Close() }()
	sel, err := uri.Parse("pkcs11:serial=" + want.serial)
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	tok, err := mod.FindToken(ctx, sel)
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	defer func() { _ = tok.Close() }()
	if want.state == tokenUnknown {
		return nil // as for a real token (checkToken)
	}
	if want.state != tokenWiped {
		var pin string
		if err := c.call(c.operator, func(ctx context.Context, cl *client.Client) error {
			var err error
			pin, err = cl.RevealUserPIN(ctx, want.pinJob)
			return err
		}); err != nil {
			return []string{fmt.Sprintf("%s: the user PIN of job %s: %v", where, want.pinJob, err)}
		}
		if err := tok.Login(ctx, pin); err != nil {
			return []string{fmt.Sprintf("%s: the user PIN of job %s does not log in: %v", where, want.pinJob, err)}
		}
		defer func() { _ = tok.Logout(ctx) }()
	}
	keys, err := tok.Keys(ctx)
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	certs, err := tok.Certificates(ctx)
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	var own []pkcs11.Certificate
	for _, cert := range certs {
		if !cert.Authority {
			own = append(own, cert)
		}
	}
	describe := func() string {
		var b bytes.Buffer
		for _, k := range keys {
			fmt.Fprintf(&b, "\n  key id=%s label=%q private=%t", k.ID, k.Label, k.Private)
		}
		for _, cert := range certs {
			fmt.Fprintf(&b, "\n  certificate id=%s label=%q authority=%t", cert.ID, cert.Label, cert.Authority)
		}
		return b.String()
	}
	if want.state == tokenWiped {
		if len(keys) > 0 || len(own) > 0 {
			return []string{fmt.Sprintf("%s: wiped, and holds:%s", where, describe())}
		}
		return nil
	}
	keyID := protocol.DeriveKeyID(want.keyJob)
	wantCerts := 0
	if want.hasCert {
		wantCerts = 1
	}
	if len(keys) != 1 || keys[0].ID.String() != keyID || !keys[0].Private || len(own) != wantCerts ||
		(wantCerts == 1 && own[0].ID.String() != keyID) {
		return []string{fmt.Sprintf("%s: want one key pair and %d certificates with ID %s (job %s); it holds:%s", where, wantCerts, keyID, want.keyJob, describe())}
	}
	if wantCerts == 1 {
		stored := certOf[want.keyJob]
		found := false
		for _, cert := range stored {
			found = found || bytes.Equal(pemDER(cert.PEM), own[0].DER)
		}
		if !found {
			return []string{fmt.Sprintf("%s: the certificate on the token is none of the %d the coordinator stored for job %s", where, len(stored), want.keyJob)}
		}
	}
	return nil
}
