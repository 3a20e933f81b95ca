package service

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// DefaultStatsTimeout bounds the database reads of one scrape.
const DefaultStatsTimeout = 5 * time.Second

// FleetOptions configure a FleetCollector.
type FleetOptions struct {
	// Store is read at each scrape (store.Reader.FleetStats). Required.
	Store store.Reader
	// CRL, if set, returns the current CRL (DER): its nextUpdate is reported.
	CRL func(ctx context.Context) ([]byte, error)
	// BrokerUp, if set, reports whether the broker connection is up.
	BrokerUp func() bool
	// Timeout bounds the reads of one scrape; zero means DefaultStatsTimeout.
	Timeout time.Duration
	Logger  zerolog.Logger
	Now     func() time.Time // nil: time.Now
}

// FleetCollector reports the state of the fleet as the database has it, read when
// Prometheus scrapes: a few aggregate queries per scrape, nothing per event, and the same
// figures from every coordinator sharing a database. A failed read leaves its families out
// of that scrape and sets fleet_stats_up to 0, so a database away does not fail /metrics.
type FleetCollector struct {
	o FleetOptions

	up, jobs, outbox, outboxAge, agents, certs, crlNext, broker, rollouts *prometheus.Desc
}

// Buckets of FleetCollector's certificate gauge, the expires_in label.
const (
	ExpiresExpired     = "expired"
	ExpiresUnder7Days  = "under_7d"
	ExpiresUnder30Days = "7d_to_30d"
	ExpiresUnder90Days = "30d_to_90d"
	ExpiresLater       = "over_90d"
)

// NewFleetCollector returns the collector; register it with the registry /metrics serves.
func NewFleetCollector(o FleetOptions) (*FleetCollector, error) {
	if o.Store == nil {
		return nil, fmt.Errorf("service: fleet metrics need a store")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultStatsTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	name := func(n string) string { return prometheus.BuildFQName("tokenfleet", "coordinator", n) }
	return &FleetCollector{o: o,
		up: prometheus.NewDesc(name("fleet_stats_up"),
			"1 when the last read of the fleet's state from the database succeeded, else 0.", nil, nil),
		jobs: prometheus.NewDesc(name("jobs"),
			"Jobs by kind and state, as the database holds them.", []string{"kind", "state"}, nil),
		outbox: prometheus.NewDesc(name("outbox_messages"),
			"Outbox messages not yet confirmed by the broker.", nil, nil),
		outboxAge: prometheus.NewDesc(name("outbox_oldest_age_seconds"),
			"Age of the oldest outbox message not yet confirmed by the broker; 0 when there is none.", nil, nil),
		agents: prometheus.NewDesc(name("agents"),
			"Enrolled agents by presence (online: heartbeats arrive).", []string{"presence"}, nil),
		certs: prometheus.NewDesc(name("certificates"),
			"Certificates in use (not revoked, not superseded by a later one of the same holder, profile and token) "+
				"by time left to expiry; expired counts those expired within 30 days.", []string{"expires_in"}, nil),
		crlNext: prometheus.NewDesc(name("crl_next_update_timestamp_seconds"),
			"The nextUpdate of the CRL the coordinator serves, in Unix seconds.", nil, nil),
		broker: prometheus.NewDesc(name("broker_up"),
			"1 while the coordinator is connected to the broker, else 0.", nil, nil),
		rollouts: prometheus.NewDesc(name("rollouts"),
			"Rollouts by state, as the database holds them.", []string{"state"}, nil),
	}, nil
}

// Describe implements prometheus.Collector.
func (c *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.jobs, c.outbox, c.outboxAge, c.agents, c.certs, c.crlNext, c.broker, c.rollouts} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.o.Timeout)
	defer cancel()
	now := c.o.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.o.BrokerUp != nil {
		gauge(c.broker, boolFloat(c.o.BrokerUp()))
	}
	if c.o.CRL != nil {
		if next, err := c.crlNextUpdate(ctx); err != nil {
			c.o.Logger.Warn().Err(err).Msg("metrics: reading the CRL's next update")
		} else {
			gauge(c.crlNext, float64(next.Unix()))
		}
	}

	st, err := c.o.Store.FleetStats(ctx, now)
	if err != nil {
		c.o.Logger.Warn().Err(err).Msg("metrics: reading the fleet's state from the database")
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	// Every kind and state is reported, zero or not, so that a rule on a count that has
	// just fallen to zero sees 0 rather than no series.
	counts := map[[2]string]int64{}
	for _, jc := range st.Jobs {
		counts[[2]string{string(jc.Kind), string(jc.State)}] += jc.Count
	}
	for _, k := range jobs.Kinds() {
		for _, s := range jobs.States() {
			key := [2]string{string(k), string(s)}
			gauge(c.jobs, float64(counts[key]), key[0], key[1])
			delete(counts, key)
		}
	}
	for key, n := range counts { // a kind or state this build does not know
		gauge(c.jobs, float64(n), key[0], key[1])
	}
	gauge(c.outbox, float64(st.OutboxUnsent))
	age := 0.0
	if !st.OutboxOldest.IsZero() {
		age = max(now.Sub(st.OutboxOldest).Seconds(), 0)
	}
	gauge(c.outboxAge, age)
	gauge(c.agents, float64(st.AgentsOnline), "online")
	gauge(c.agents, float64(st.AgentsOffline), "offline")
	e := st.Certificates
	gauge(c.certs, float64(e.Expired), ExpiresExpired)
	gauge(c.certs, float64(e.Under7Days), ExpiresUnder7Days)
	gauge(c.certs, float64(e.Under30Days), ExpiresUnder30Days)
	gauge(c.certs, float64(e.Under90Days), ExpiresUnder90Days)
	gauge(c.certs, float64(e.Later), ExpiresLater)
	byState, err := c.rolloutCounts(ctx)
	if err != nil {
		c.o.Logger.Warn().Err(err).Msg("metrics: counting rollouts")
		return
	}
	for _, s := range rollout.States() {
		gauge(c.rollouts, float64(byState[s]), string(s))
	}
}

// rolloutCounts counts rollouts by state. Rollouts are few (each is a whole campaign):
// reading their rows is cheaper than another aggregate query to maintain.
func (c *FleetCollector) rolloutCounts(ctx context.Context) (map[rollout.State]int, error) {
	out := map[rollout.State]int{}
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		ros, next, err := c.o.Store.ListRollouts(ctx, store.RolloutFilter{}, p)
		if err != nil {
			return nil, err
		}
		for _, r := range ros {
			out[rollout.State(r.State)]++
		}
		if next == "" {
			return out, nil
		}
		p.Cursor = next
	}
}

func (c *FleetCollector) crlNextUpdate(ctx context.Context) (time.Time, error) {
	der, err := c.o.CRL(ctx)
	if err != nil {
		return time.Time{}, err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return time.Time{}, fmt.Errorf("parsing the CRL: %w", err)
	}
	return crl.NextUpdate, nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
