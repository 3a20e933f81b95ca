//go:build cgo

package executor

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// BenchmarkIssueAgentShare: the agent's own share of an issuance, as the fleet simulator's
// agents run it (journal on disk, a sync per commit; a blank simulated token with no
// latency, so no token time): from the dispatch handed to the executor until its CSR is
// journalled, and from the certificate handed to it until its result is journalled. No
// broker and no coordinator: the sender's marks are left out. ns/op is one issuance;
// csr-ms and result-ms are the two legs, commits/op the journal's commits.
func BenchmarkIssueAgentShare(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		b.Fatal(err)
	}
	log := zerolog.Nop()
	j, err := journal.Open(ctx, filepath.Join(dir, journal.FileName), pair, journal.Options{Log: log})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = j.Close() }()
	back, err := simtoken.New(simtoken.Options{Profile: simtoken.Instant, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	mod, err := pkcs11.OpenBackend("simtoken", back, pkcs11.Options{Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = mod.Close() }()
	ca, err := testenv.NewCA("tokenfleet bench issuing CA")
	if err != nil {
		b.Fatal(err)
	}
	key, err := seal.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	coord := newCoordinator(pair, ca, key)
	ex, err := New(Config{AgentID: testAgent, Journal: j, Keys: pair, Tokens: ModuleTokens{Module: mod}, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ex.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()

	// await waits for a message of type t of ref in the outbox, woken by the journal.
	await := func(ref protocol.JobRef, t protocol.MessageType) *protocol.Envelope {
		deadline := time.NewTimer(time.Minute)
		defer deadline.Stop()
		for {
			msgs, err := j.Messages(ctx, ref.JobID)
			if err != nil {
				b.Fatal(err)
			}
			for _, m := range msgs {
				if m.Type == t {
					env, err := protocol.Decode(m.Data)
					if err != nil {
						b.Fatal(err)
					}
					return env
				}
			}
			select {
			case <-j.Notify():
			case <-deadline.C:
				b.Fatalf("no %s for %s", t, ref.JobID)
			}
		}
	}
	var csrTime, resultTime time.Duration
	commits := j.Commits()
	i := 0
	for b.Loop() {
		serial := fmt.Sprintf("SIMB%06d", i)
		ref := protocol.JobRef{JobID: fmt.Sprintf("bench-issue-%d", i), Attempt: 1}
		i++
		if _, err := back.AddToken(simtoken.TokenSpec{Serial: serial}); err != nil {
			b.Fatal(err)
		}
		d := coord.dispatch(ref, protocol.JobDispatch{
			Kind: protocol.KindIssue, Profile: "signature",
			Token:      protocol.TokenSelector{Blank: true},
			Initialise: true, TokenLabel: "bench",
			PINPolicy: policy(8, true),
			Key:       &protocol.KeyParams{Type: protocol.KeyP256, ID: keyID(ref.JobID), Label: "signing"},
			ResultKey: coord.resultKey(),
		})
		t0 := time.Now()
		if _, err := ex.Submit(ctx, d); err != nil {
			b.Fatal(err)
		}
		csr := await(ref, protocol.TypeCSR)
		t1 := time.Now()
		if err := coord.deliverFor(ctx, csr, ex); err != nil {
			b.Fatal(err)
		}
		await(ref, protocol.TypeResult)
		t2 := time.Now()
		csrTime += t1.Sub(t0)
		resultTime += t2.Sub(t1)
		// Out of the way: the next job's blank token is the only one.
		if err := back.Remove(serial); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(csrTime.Microseconds())/n/1000, "csr-ms")
	b.ReportMetric(float64(resultTime.Microseconds())/n/1000, "result-ms")
	b.ReportMetric(float64(j.Commits()-commits)/n, "commits/op")
}
