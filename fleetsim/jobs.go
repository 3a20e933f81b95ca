package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// The job load's organisation, holder and profile, made by SetUpJobs.
const (
	JobOrganization = "fleetsim"
	JobHolder       = "fleetsim-holder"
	JobProfile      = "fleetsim-issue"
)

// jobProfile issues on any blank token without approval: the job load measures what
// tokenfleet adds between approval and success, not people.
const jobProfile = `name: ` + JobProfile + `
description: Fleet simulator load; initialise any blank token, P-256 key, no approval.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
  organization: "{{.Organization}}"
sans:
  email: true
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
token:
  initialize: true
  label: "sim {{.ID}}"
  any_blank: true
pin_policy: {min_length: 6, max_length: 16, so_pin_length: 16}
`

// SetUpJobs makes the job load's organisation, holder and profile; what exists is kept.
func SetUpJobs(ctx context.Context, api *client.Client) error {
	if _, err := api.CreateOrg(ctx, JobOrganization); err != nil && !conflict(err) {
		return fmt.Errorf("organisation %s: %w", JobOrganization, err)
	}
	_, err := api.CreateUser(ctx, client.UserCreate{Username: JobHolder, DisplayName: "Fleet Simulator",
		Email: JobHolder + "@fleetsim.example", Organization: JobOrganization})
	if err != nil && !conflict(err) {
		return fmt.Errorf("holder %s: %w", JobHolder, err)
	}
	if _, err := api.ApplyProfiles(ctx, []byte(jobProfile)); err != nil {
		return fmt.Errorf("profile %s: %w", JobProfile, err)
	}
	return nil
}

func conflict(err error) bool {
	var ae *client.Error
	return errors.As(err, &ae) && ae.Status == http.StatusConflict
}

// Percentiles of a set of durations, in milliseconds.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
}

// percentiles of ds (nearest rank).
func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.999999) - 1
		return float64(s[min(max(i, 0), len(s)-1)]) / float64(time.Millisecond)
	}
	return Percentiles{N: len(s), P50: at(0.50), P90: at(0.90), P99: at(0.99)}
}

// endedJobs list the job load's jobs in each final state.
var endedJobs = []client.JobFilter{
	{Holder: JobHolder, State: "succeeded"}, {Holder: JobHolder, State: "failed"}, {Holder: JobHolder, State: "cancelled"},
	{Holder: JobHolder, State: "expired"}, {Holder: JobHolder, State: "rejected"}, {Holder: JobHolder, State: "superseded"},
}

// Phases of a job's life, as its timeline records them.
var Phases = []string{"approved→dispatched", "dispatched→running", "running→csr_signed", "csr_signed→succeeded"}

// JobReport is what a job load measured.
type JobReport struct {
	Agents    int     `json:"agents"`
	Jobs      int     `json:"jobs"`
	Rate      float64 `json:"created_per_second"` // 0: all at once
	Succeeded int     `json:"succeeded"`
	Failed    int     `json:"failed"`
	Seconds   Seconds `json:"seconds"`
	PerSecond float64 `json:"jobs_per_second"`
	// Phases maps each of Phases to its latency.
	Phases map[string]Percentiles `json:"phases"`
	// EndToEnd is approval → succeeded; TokenTime the simulated token's time per job;
	// Overhead is EndToEnd minus TokenTime, job by job: what tokenfleet adds.
	EndToEnd  Percentiles `json:"end_to_end"`
	TokenTime Percentiles `json:"token_time"`
	Overhead  Percentiles `json:"overhead"`
	// Verified certificates passed `openssl verify` against the coordinator's CA, of
	// VerifySample checked.
	Verified     int    `json:"certificates_verified"`
	VerifySample int    `json:"certificates_checked"`
	FirstFailure string `json:"first_failure,omitempty"`
}

// JobLoadConfig is a job load: one issue job for each of Agents, all created at once.
type JobLoadConfig struct {
	API    *client.Client
	Agents []string
	// Tokens are the agents' simulated tokens (one each), for token time; nil: not
	// subtracted.
	Tokens *SimTokens
	// Verify is how many certificates are checked with openssl verify.
	Verify int
	// Rate is how many jobs are created a second; 0 creates them all at once (a burst,
	// whose latencies are mostly queueing).
	Rate float64
	// Timeout bounds the wait for every job to end.
	Timeout time.Duration
	Log     zerolog.Logger
}

// RunJobs creates an issue job through the API for each agent (SetUpJobs first), waits
// until every one has ended, and computes from each job's timeline the latency of every
// phase and the end-to-end overhead.
func RunJobs(ctx context.Context, cfg JobLoadConfig) (*JobReport, error) {
	rep := &JobReport{Agents: len(cfg.Agents), Jobs: len(cfg.Agents), Rate: cfg.Rate, Phases: map[string]Percentiles{}}
	if err := SetUpJobs(ctx, cfg.API); err != nil {
		return rep, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	type running struct {
		id, agent   string
		tokenBefore time.Duration
		job         client.JobDetail
		tokenTime   time.Duration
	}
	all := make([]*running, len(cfg.Agents))
	begin := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 16) // requests in flight
	for i, a := range cfg.Agents {
		r := &running{agent: a}
		all[i] = r
		if cfg.Tokens != nil {
			r.tokenBefore = cfg.Tokens.TokenTime(Serial(a, 0))
		}
		if cfg.Rate > 0 {
			if err := sleepCtx(ctx, time.Until(begin.Add(time.Duration(float64(i)/cfg.Rate*float64(time.Second))))); err != nil {
				return rep, err
			}
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			j, err := cfg.API.CreateJob(ctx, client.JobCreate{Kind: "issue", Holder: JobHolder, Agent: a, Profile: JobProfile})
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("creating a job for %s: %w", a, err)
			}
			r.id = j.ID
		})
	}
	wg.Wait()
	if firstErr != nil {
		return rep, firstErr
	}
	cfg.Log.Info().Int("jobs", len(all)).Msg("jobs created; waiting for them to end")

	// Poll each unfinished job until it ends.
	deadline := time.Now().Add(cfg.Timeout)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	pending := make(map[string]*running, len(all))
	for _, r := range all {
		pending[r.id] = r
	}
	for len(pending) > 0 {
		// Jobs that ended, found in lists of the holder's jobs (a request a page rather
		// than one a job, so that watching does not load the coordinator), then read
		// once each for their timeline.
		for _, f := range endedJobs {
			for j, err := range cfg.API.AllJobs(ctx, f, 500) {
				if err != nil {
					return rep, fmt.Errorf("listing %s jobs: %w", f.State, err)
				}
				r := pending[j.ID]
				if r == nil {
					continue
				}
				if cfg.Tokens != nil {
					r.tokenTime = cfg.Tokens.TokenTime(Serial(r.agent, 0)) - r.tokenBefore
				}
				d, err := cfg.API.GetJob(ctx, r.id)
				if err != nil {
					return rep, fmt.Errorf("job %s: %w", r.id, err)
				}
				r.job = d
				delete(pending, j.ID)
			}
		}
		if len(pending) == 0 {
			break
		}
		if err := wait(ctx, tick, deadline); err != nil {
			return rep, fmt.Errorf("%d of %d jobs still running after %s: %w", len(pending), len(all), cfg.Timeout, err)
		}
	}
	rep.Seconds = secs(time.Since(begin))
	rep.PerSecond = float64(len(all)) / time.Since(begin).Seconds()

	phases := make([][]time.Duration, len(Phases))
	var e2e, tokenTimes, overheads []time.Duration
	for _, r := range all {
		if string(r.job.State) != "succeeded" {
			rep.Failed++
			if rep.FirstFailure == "" {
				rep.FirstFailure = fmt.Sprintf("job %s on %s: %s: %s", r.id, r.agent, r.job.State, r.job.AgentResult)
			}
			continue
		}
		rep.Succeeded++
		at := map[string]time.Time{}
		for _, ev := range r.job.Timeline {
			to := string(ev.To)
			if to == "installing" || to == "awaiting_certificate" {
				to = "csr_signed"
			}
			if _, seen := at[to]; !seen {
				at[to] = ev.At
			}
		}
		order := []string{"approved", "dispatched", "running", "csr_signed", "succeeded"}
		for i := range Phases {
			from, to := at[order[i]], at[order[i+1]]
			if !from.IsZero() && !to.IsZero() {
				phases[i] = append(phases[i], to.Sub(from))
			}
		}
		if from, to := at["approved"], at["succeeded"]; !from.IsZero() && !to.IsZero() {
			d := to.Sub(from)
			e2e = append(e2e, d)
			tokenTimes = append(tokenTimes, r.tokenTime)
			overheads = append(overheads, d-r.tokenTime)
		}
	}
	for i, name := range Phases {
		rep.Phases[name] = percentiles(phases[i])
	}
	rep.EndToEnd, rep.TokenTime, rep.Overhead = percentiles(e2e), percentiles(tokenTimes), percentiles(overheads)

	if cfg.Verify > 0 && rep.Succeeded > 0 {
		v, n, err := verifyCertificates(ctx, cfg.API, cfg.Agents, cfg.Verify)
		rep.Verified, rep.VerifySample = v, n
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// verifyCertificates checks up to n of the agents' certificates with `openssl verify`
// against the coordinator's CA, a tool nobody here wrote.
func verifyCertificates(ctx context.Context, api *client.Client, agents []string, n int) (verified, checked int, err error) {
	chain, err := api.CACertificates(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("the coordinator's CA: %w", err)
	}
	dir, err := os.MkdirTemp("", "fleetsim-verify-")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, []byte(chain.PEM), 0o600); err != nil {
		return 0, 0, err
	}
	for _, a := range agents {
		if checked == n {
			break
		}
		l, err := api.ListCertificates(ctx, client.CertificateFilter{Agent: a}, client.Page{Limit: 1})
		if err != nil {
			return verified, checked, err
		}
		if len(l.Items) == 0 {
			continue
		}
		checked++
		f := filepath.Join(dir, "cert.pem")
		if err := os.WriteFile(f, []byte(l.Items[0].PEM), 0o600); err != nil {
			return verified, checked, err
		}
		out, err := exec.CommandContext(ctx, "openssl", "verify", "-CAfile", caFile, f).CombinedOutput()
		if err != nil {
			return verified, checked, fmt.Errorf("openssl verify of %s's certificate: %w: %s", a, err, out)
		}
		verified++
	}
	return verified, checked, nil
}

// WriteText writes the job report for people, beside the goals (p50 ≤ 20 ms and p99 ≤
// 100 ms of overhead with 1,000 busy agents).
func (r *JobReport) WriteText(w io.Writer) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format+"\n", args...) }
	created := "all at once"
	if r.Rate > 0 {
		created = fmt.Sprintf("created at %.1f a second", r.Rate)
	}
	p("jobs: %d issue jobs on %d agents (%s), done in %s (%.1f a second): %d succeeded, %d failed", r.Jobs, r.Agents, created, r.Seconds, r.PerSecond, r.Succeeded, r.Failed)
	if r.FirstFailure != "" {
		p("first failure: %s", r.FirstFailure)
	}
	for _, name := range Phases {
		q := r.Phases[name]
		p("  %-22s p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms", name, q.P50, q.P90, q.P99)
	}
	p("  %-22s p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms", "approval→succeeded", r.EndToEnd.P50, r.EndToEnd.P90, r.EndToEnd.P99)
	p("  %-22s p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms", "token time", r.TokenTime.P50, r.TokenTime.P90, r.TokenTime.P99)
	p("  %-22s p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms   (goal: p50 ≤ 20, p99 ≤ 100)", "overhead", r.Overhead.P50, r.Overhead.P90, r.Overhead.P99)
	if r.VerifySample > 0 {
		p("certificates: %d of %d checked pass openssl verify against the coordinator's CA", r.Verified, r.VerifySample)
	}
}
