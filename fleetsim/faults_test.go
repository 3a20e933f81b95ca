package fleetsim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestParseTokenFault: faults and re-insertion times are read, and what is wrong is named
// with what is valid.
func TestParseTokenFault(t *testing.T) {
	f, err := fleetsim.ParseTokenFault("keygen_ec=0.02:token.device_removed")
	if err != nil || f != (fleetsim.TokenFault{Op: simtoken.OpKeygenEC, Rate: 0.02, Code: pkcs11.CodeDeviceRemoved}) {
		t.Fatalf("got %+v, %v", f, err)
	}
	if again, err := fleetsim.ParseTokenFault(f.String()); err != nil || again != f {
		t.Errorf("String %q reads back as %+v, %v", f, again, err)
	}
	if f, err := fleetsim.ParseTokenFault("sign_rsa=1:device_error"); err != nil || f.Code != pkcs11.CodeDeviceError {
		t.Errorf("a code without its token. prefix: %+v, %v", f, err)
	}
	for spec, want := range map[string][]string{
		"keygen=0.1:token.device_error":    {`unknown operation "keygen"`, "keygen_ec", "slot_list"},
		"keygen_ec=1.5:token.device_error": {"rate 1.5", "0 to 1"},
		"keygen_ec=-1:token.device_error":  {"rate -1", "0 to 1"},
		"keygen_ec=NaN:token.device_error": {"rate NaN", "0 to 1"},
		"keygen_ec=often:token.error":      {`rate "often"`, "OP=RATE:CODE"},
		"keygen_ec=0.1:token.broken":       {`"token.broken"`, "token.device_error", "token.device_removed"},
		"keygen_ec=0.1:token.key_exists":   {`"token.key_exists"`, "want one of"},
		"keygen_ec":                        {"OP=RATE:CODE"},
	} {
		_, err := fleetsim.ParseTokenFault(spec)
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %v lacks %q", spec, err, w)
			}
		}
	}
	twice := []fleetsim.TokenFault{
		{Op: simtoken.OpLogin, Rate: 0.1, Code: pkcs11.CodeDeviceError},
		{Op: simtoken.OpLogin, Rate: 0.2, Code: pkcs11.CodeNotPresent},
	}
	if err := fleetsim.CheckTokenFaults(twice); err == nil || !strings.Contains(err.Error(), "one fault per operation") {
		t.Errorf("one operation faulted twice: %v", err)
	}
	if _, err := fleetsim.NewSimTokens(fleetsim.SimTokensConfig{PerAgent: 1, Faults: twice}); err == nil {
		t.Error("NewSimTokens took one operation faulted twice")
	}

	d, err := fleetsim.ParseReinsert("2s/8s")
	if err != nil || d != (simtoken.Dist{Median: 2 * time.Second, P95: 8 * time.Second}) {
		t.Errorf("2s/8s: %+v, %v", d, err)
	}
	if d, err := fleetsim.ParseReinsert("3s"); err != nil || d.Median != 3*time.Second || d.P95 != 3*time.Second {
		t.Errorf("3s: %+v, %v", d, err)
	}
	for spec, want := range map[string]string{"5": "like 5s", "0s": "above 0", "5s/1s": "below the median", "5s/x": "95th percentile"} {
		if _, err := fleetsim.ParseReinsert(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v lacks %q", spec, err, want)
		}
	}
}

// TestTokenFaultsInRun: with EC key generation failing at a rate of 1, every issue job of
// a run fails with the fault's code, and the report counts the failures injected.
func TestTokenFaultsInRun(t *testing.T) {
	const agents = 3
	ctx := testenv.Context(t)
	broker := testenv.NewBroker(t)
	c := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: broker.URL, AgentUsers: "shared"})
	api, err := client.New(c.URL, c.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := fleetsim.NewSimTokens(fleetsim.SimTokensConfig{PerAgent: 1, Seed: 1, Faults: []fleetsim.TokenFault{
		{Op: simtoken.OpKeygenEC, Rate: 1, Code: pkcs11.CodeDeviceError},
		{Op: simtoken.OpSignRSA, Rate: 0.5, Code: pkcs11.CodeDeviceRemoved}, // no job signs with RSA: none injected
	}})
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	fleet, err := fleetsim.NewFleet(fleetsim.FleetConfig{
		BrokerURL: broker.URL, Prefix: "bad-", Count: agents, DataDir: t.TempDir(), Heartbeat: 500 * time.Millisecond,
		Tokens: toks, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fleetsim.Run(ctx, fleetsim.RunConfig{
		Agents: agents, Prefix: "bad-", Heartbeat: 500 * time.Millisecond, API: api, Enrol: true,
		OnlineTimeout: time.Minute, Jobs: agents, Tokens: toks, Log: log,
	}, fleet)
	if err != nil {
		t.Fatalf("run: %v (report %+v)", err, rep)
	}
	if rep.Jobs == nil || rep.Jobs.Failed != agents || !strings.Contains(rep.Jobs.FirstFailure, string(pkcs11.CodeDeviceError)) {
		t.Fatalf("jobs: %+v; want all %d failed with %s", rep.Jobs, agents, pkcs11.CodeDeviceError)
	}
	faults := rep.Fleet.TokenFaults
	if len(faults) != 2 || faults[0].Op != simtoken.OpKeygenEC || faults[0].Code != pkcs11.CodeDeviceError ||
		faults[0].Injected < agents || faults[1].Op != simtoken.OpSignRSA || faults[1].Injected != 0 {
		t.Errorf("faults in the report: %+v; want keygen_ec token.device_error injected at least %d times, sign_rsa none", faults, agents)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "token faults injected:") || !strings.Contains(text.String(), "keygen_ec") {
		t.Errorf("the text report does not show the faults:\n%s", text.String())
	}
}

// TestCrashRestart: agents crashed at random during a run come back from their journals:
// they say hello again, and every issue job of the run still succeeds.
func TestCrashRestart(t *testing.T) {
	const agents = 8
	ctx := testenv.Context(t)
	broker := testenv.NewBroker(t)
	timeout := 3 * time.Second
	const heartbeat = 500 * time.Millisecond
	c := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: broker.URL, AgentUsers: "shared", HeartbeatTimeout: timeout})
	api, err := client.New(c.URL, c.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := fleetsim.NewSimTokens(fleetsim.SimTokensConfig{PerAgent: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	fleet, err := fleetsim.NewFleet(fleetsim.FleetConfig{
		BrokerURL: broker.URL, Prefix: "crash-", Count: agents, DataDir: t.TempDir(), Heartbeat: heartbeat,
		PerConnection: 4, Tokens: toks, Log: log,
		CrashEvery: 300 * time.Millisecond, RestartAfter: 200 * time.Millisecond, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fleetsim.Run(ctx, fleetsim.RunConfig{
		Agents: agents, Prefix: "crash-", Heartbeat: heartbeat, API: api, Enrol: true, Window: 2 * time.Second,
		PresenceTimeout: timeout, OnlineTimeout: time.Minute, Jobs: agents, JobRate: 4, Tokens: toks, Log: log,
	}, fleet)
	if err != nil {
		t.Fatalf("run: %v (report %+v)", err, rep)
	}
	st := rep.Fleet
	if st.Crashes == 0 || st.Restarts == 0 || st.Restarts > st.Crashes {
		t.Errorf("%d crashes, %d restarts: want some of each, no more restarts than crashes", st.Crashes, st.Restarts)
	}
	if st.Started != agents || st.Failed != 0 {
		t.Errorf("fleet %+v: want %d agents started, none failed", st, agents)
	}
	// A restarted agent says hello when it is back: more hellos than agents.
	if st.Hellos <= agents {
		t.Errorf("%d hellos from %d agents after %d restarts: the restarted agents did not come back", st.Hellos, agents, st.Restarts)
	}
	if rep.Online != agents {
		t.Errorf("%d of %d agents online after the window", rep.Online, agents)
	}
	if rep.Jobs == nil || rep.Jobs.Succeeded != agents {
		t.Errorf("jobs: %+v; want all %d succeeded despite the crashes", rep.Jobs, agents)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", text.String())
	if !strings.Contains(text.String(), "crashes: ") {
		t.Errorf("the text report does not show the crashes:\n%s", text.String())
	}
}

// TestSetFaults: the simulated tokens' failures change while agents use them, on the
// modules opened before and on those of agents that come later; the failures injected
// before stay counted, with the fault's rate now.
func TestSetFaults(t *testing.T) {
	ctx := testenv.Context(t)
	toks, err := fleetsim.NewSimTokens(fleetsim.SimTokensConfig{PerAgent: 1, Seed: 1, Faults: []fleetsim.TokenFault{
		{Op: simtoken.OpFind, Rate: 1, Code: pkcs11.CodeDeviceError},
	}})
	if err != nil {
		t.Fatal(err)
	}
	keys := func(agentID string) error {
		t.Helper()
		mod, err := toks.Open(toks.Modules(agentID)[0], pkcs11.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = mod.Close() }()
		sel, err := uri.Parse("pkcs11:serial=" + fleetsim.Serial(agentID, 0))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := mod.FindToken(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tok.Close() }()
		_, err = tok.Keys(ctx) // a C_FindObjectsInit
		return err
	}
	if err := keys("a-00000"); err == nil || !strings.Contains(err.Error(), string(pkcs11.CodeDeviceError)) {
		t.Fatalf("listing keys with finds failing at a rate of 1: %v", err)
	}
	// The tokens are fixed: no failure from now on, on this agent's tokens or a new one's.
	if err := toks.SetFaults(nil); err != nil {
		t.Fatal(err)
	}
	for _, agent := range []string{"a-00000", "a-00001"} {
		if err := keys(agent); err != nil {
			t.Errorf("%s lists its keys after the faults were removed: %v", agent, err)
		}
	}
	faults := toks.Faults()
	if len(faults) != 1 || faults[0].Op != simtoken.OpFind || faults[0].Rate != 0 || faults[0].Injected != 1 {
		t.Errorf("faults %+v; want find token.device_error injected once, its rate now 0", faults)
	}
	// Broken again, with another code, on every agent's tokens: both faults are reported.
	if err := toks.SetFaults([]fleetsim.TokenFault{{Op: simtoken.OpFind, Rate: 1, Code: pkcs11.CodeDeviceRemoved}}); err != nil {
		t.Fatal(err)
	}
	if err := keys("a-00001"); err == nil || !strings.Contains(err.Error(), string(pkcs11.CodeDeviceRemoved)) {
		t.Errorf("a token fixed and broken again: %v", err)
	}
	faults = toks.Faults()
	if len(faults) != 2 || faults[0].Injected != 1 || faults[0].Rate != 0 ||
		faults[1].Code != pkcs11.CodeDeviceRemoved || faults[1].Injected != 1 || faults[1].Rate != 1 {
		t.Errorf("faults %+v; want the first (rate 0, injected once) and the second (rate 1, injected once)", faults)
	}
	// Checked like the configuration's.
	err = toks.SetFaults([]fleetsim.TokenFault{{Op: "keygen", Rate: 0.1, Code: pkcs11.CodeDeviceError}})
	if err == nil || !strings.Contains(err.Error(), `unknown operation "keygen"`) {
		t.Errorf("an unknown operation: %v", err)
	}
	// A fleet whose agents have no simulated tokens says so.
	fleet, err := fleetsim.NewFleet(fleetsim.FleetConfig{BrokerURL: "amqp://127.0.0.1:1/", Count: 1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := fleet.SetTokenFaults(nil); err == nil || !strings.Contains(err.Error(), "no simulated tokens") {
		t.Errorf("setting faults on a fleet without simulated tokens: %v", err)
	}
}
