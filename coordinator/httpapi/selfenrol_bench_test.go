package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// selfEnrolAgents is how many agents one iteration of BenchmarkSelfEnrol enrols each way,
// and selfEnrolClients how many enrol at once (a software-distribution rollout starts
// many machines together).
const (
	selfEnrolAgents  = 1000
	selfEnrolClients = 16
)

// BenchmarkSelfEnrol: agents enrolling themselves through POST /api/v1/enrol with one
// reusable enrolment key, as a software-distribution rollout does, without starting a
// process per agent. Pre-approved, each enrolment also provisions the agent's broker user
// through RabbitMQ's management API (a user, its permissions, its topic permissions) and
// declares its queue; the reference, in the same run, is a key held for approval, whose
// agents get neither until an administrator approves them. Reported: agents/s (with
// broker provisioning), ref-agents/s (held) and ratio (the first ÷ the second). The
// broker users it made are removed when it ends.
func BenchmarkSelfEnrol(b *testing.B) {
	br := testenv.NewBroker(b)
	inst := coordinatortest.Start(b, coordinatortest.Options{BrokerURL: br.URL, AgentUsers: "per_agent", Management: true, Log: io.Discard})
	ctx := testenv.Context(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: selfEnrolClients}}
	do := func(path, bearer string, in, out any) {
		body, _ := json.Marshal(in)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, inst.DirectURL+path, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("POST %s: %d %s", path, resp.StatusCode, data)
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				b.Fatal(err)
			}
		}
	}
	newKey := func(pre bool) string {
		var keys api.EnrolmentKeys
		do("/api/v1/enrolment-keys", inst.AdminToken, api.EnrolmentKeyCreate{Kind: "key", PreApproved: pre, Name: "bench"}, &keys)
		return keys.Items[0].Secret
	}
	// One seal key for all: what is measured is the coordinator's and the broker's work.
	priv, err := seal.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	sealKey, err := seal.MarshalPublicKey(priv.PublicKey())
	if err != nil {
		b.Fatal(err)
	}
	run := func(prefix string, iter int, code string) time.Duration {
		ids := make(chan string, selfEnrolAgents)
		for i := range selfEnrolAgents {
			ids <- fmt.Sprintf("%s-%s%d-%04d", prefix, br.VHost[len(br.VHost)-6:], iter, i)
		}
		close(ids)
		start := time.Now()
		var wg sync.WaitGroup
		for range selfEnrolClients {
			wg.Go(func() {
				for id := range ids {
					var ans protocol.EnrolAnswer
					do("/api/v1/enrol", "", protocol.EnrolRequest{Code: code, AgentID: id, Hostname: id + ".bench.example", SealKey: sealKey}, &ans)
					if prefix == "p" && ans.Credentials == nil {
						b.Errorf("pre-approved agent %s got no credentials", id)
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	var provisioned, held time.Duration
	b.ResetTimer()
	for iter := range b.N {
		b.StopTimer()
		pre, wait := newKey(true), newKey(false)
		b.StartTimer()
		// Taking turns going first, as load changes.
		if iter%2 == 0 {
			provisioned += run("p", iter, pre)
			held += run("h", iter, wait)
		} else {
			held += run("h", iter, wait)
			provisioned += run("p", iter, pre)
		}
		b.StopTimer()
		for i := range selfEnrolAgents {
			testenv.RemoveBrokerUserAtEnd(b, fmt.Sprintf("agent-p-%s%d-%04d", br.VHost[len(br.VHost)-6:], iter, i))
		}
		b.StartTimer()
	}
	n := float64(b.N * selfEnrolAgents)
	b.ReportMetric(n/provisioned.Seconds(), "agents/s")
	b.ReportMetric(n/held.Seconds(), "ref-agents/s")
	b.ReportMetric(held.Seconds()/provisioned.Seconds(), "ratio")
}
