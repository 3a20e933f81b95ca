// Package metrics is the agent's optional Prometheus endpoint: jobs by outcome, token
// operation latency by operation and token model, the broker connection and the journal's
// size. It is off unless metrics_listen (--metrics-listen) names an address; bind it to
// loopback or a management network: it has no authentication.
package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// The agent writes Prometheus's text format itself rather than through client_golang:
// its few families need no more, and the client brings the protobuf runtime, over a
// megabyte of an executable whose pages are most of an idle agent's memory.

// Metrics holds the agent's metrics. A nil *Metrics records nothing, so callers need no
// check when metrics are off.
type Metrics struct {
	mu          sync.Mutex               // guards the fields below
	jobs        map[[2]string]float64    // kind, outcome → count
	tokenOps    map[[2]string]*histogram // operation, model → latencies
	brokerUp    func() bool
	journalPath string
}

// tokenOpBuckets are the upper bounds of the token operation histogram, in seconds: a
// SoftHSM2 step takes milliseconds, an RSA key on a smart card a minute.
var tokenOpBuckets = []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

type histogram struct {
	counts []uint64 // per bucket, not cumulative; the last one is +Inf
	sum    float64
	count  uint64
}

// start is about when the process started, for process_start_time_seconds.
var start = time.Now()

// New makes the agent's metrics; the page also carries the Go runtime's and the
// process's basic figures.
func New() *Metrics {
	return &Metrics{jobs: map[[2]string]float64{}, tokenOps: map[[2]string]*histogram{}}
}

// SetBroker gives the function that says whether the broker connection is up.
func (m *Metrics) SetBroker(up func() bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.brokerUp = up
	m.mu.Unlock()
}

// SetJournal gives the journal's file.
func (m *Metrics) SetJournal(path string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.journalPath = path
	m.mu.Unlock()
}

// JobFinished counts a job attempt that ended with outcome.
func (m *Metrics) JobFinished(kind, outcome string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.jobs[[2]string{kind, outcome}]++
	m.mu.Unlock()
}

// TokenOperation records how long a successful operation took on a token of model.
func (m *Metrics) TokenOperation(operation, model string, took time.Duration) {
	if m == nil {
		return
	}
	model = strings.TrimSpace(model)
	if model == "" {
		model = "unknown"
	}
	v := took.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.tokenOps[[2]string{operation, model}]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(tokenOpBuckets)+1)}
		m.tokenOps[[2]string{operation, model}] = h
	}
	i, _ := slices.BinarySearch(tokenOpBuckets, v) // the first bound ≥ v; le is inclusive
	h.counts[i]++
	h.sum += v
	h.count++
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		bw := bufio.NewWriter(w)
		m.write(bw)
		_ = bw.Flush()
	})
}

// write writes the page: every family with its HELP and TYPE, series sorted, labels in
// name order, as client_golang writes them.
func (m *Metrics) write(w *bufio.Writer) {
	m.mu.Lock()
	jobs := make(map[[2]string]float64, len(m.jobs))
	for k, v := range m.jobs {
		jobs[k] = v
	}
	ops := make(map[[2]string]histogram, len(m.tokenOps))
	for k, h := range m.tokenOps {
		ops[k] = histogram{counts: slices.Clone(h.counts), sum: h.sum, count: h.count}
	}
	up, path := m.brokerUp, m.journalPath
	m.mu.Unlock()

	family(w, "tokenfleet_agent_jobs_finished_total", "counter",
		"Job attempts this agent finished, by kind and outcome (succeeded, failed, cancelled, superseded).")
	for _, k := range sortedKeys(jobs) {
		sample(w, "tokenfleet_agent_jobs_finished_total", labels("kind", k[0], "outcome", k[1]), jobs[k])
	}
	const opsName = "tokenfleet_agent_token_operation_duration_seconds"
	family(w, opsName, "histogram", "Time a job step took on the token, by operation (the step) and token model; successful steps only.")
	for _, k := range sortedKeys(ops) {
		h := ops[k]
		// Labels in name order: model before operation.
		var cum uint64
		for i, c := range h.counts {
			cum += c
			le := "+Inf"
			if i < len(tokenOpBuckets) {
				le = formatFloat(tokenOpBuckets[i])
			}
			sample(w, opsName+"_bucket", labels("model", k[1], "operation", k[0], "le", le), float64(cum))
		}
		sample(w, opsName+"_sum", labels("model", k[1], "operation", k[0]), h.sum)
		sample(w, opsName+"_count", labels("model", k[1], "operation", k[0]), float64(h.count))
	}
	if up != nil {
		family(w, "tokenfleet_agent_broker_up", "gauge", "1 while the agent is connected to the broker, else 0.")
		v := 0.0
		if up() {
			v = 1
		}
		sample(w, "tokenfleet_agent_broker_up", "", v)
	}
	if path != "" {
		family(w, "tokenfleet_agent_journal_size_bytes", "gauge", "Size of the agent's journal on disk (the database and its write-ahead log).")
		var size int64
		for _, p := range []string{path, path + "-wal"} {
			if st, err := os.Stat(p); err == nil {
				size += st.Size()
			}
		}
		sample(w, "tokenfleet_agent_journal_size_bytes", "", float64(size))
	}
	writeRuntime(w)
	writeProcess(w)
}

// writeRuntime writes the Go runtime's figures an operator looks at first, under
// client_golang's names.
func writeRuntime(w *bufio.Writer) {
	family(w, "go_goroutines", "gauge", "Number of goroutines that currently exist.")
	sample(w, "go_goroutines", "", float64(runtime.NumGoroutine()))
	family(w, "go_info", "gauge", "Information about the Go environment.")
	sample(w, "go_info", labels("version", runtime.Version()), 1)
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	family(w, "go_memstats_heap_alloc_bytes", "gauge", "Number of heap bytes allocated and currently in use.")
	sample(w, "go_memstats_heap_alloc_bytes", "", float64(uint64Of(s[0])))
	family(w, "go_memstats_sys_bytes", "gauge", "Number of bytes obtained from system.")
	sample(w, "go_memstats_sys_bytes", "", float64(uint64Of(s[1])))
	family(w, "go_gc_cycles_total", "counter", "Count of completed GC cycles.")
	sample(w, "go_gc_cycles_total", "", float64(uint64Of(s[2])))
}

func uint64Of(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}

// writeProcess writes the process's start time, and where /proc tells them (Linux) its
// resident memory, CPU time and open files, under client_golang's names.
func writeProcess(w *bufio.Writer) {
	family(w, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.")
	sample(w, "process_start_time_seconds", "", float64(start.UnixNano())/1e9)
	if data, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(data)); len(f) > 1 {
			if pages, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				family(w, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
				sample(w, "process_resident_memory_bytes", "", float64(pages*uint64(os.Getpagesize())))
			}
		}
	}
	if data, err := os.ReadFile("/proc/self/stat"); err == nil {
		// After the command name in parentheses: utime and stime are fields 14 and 15,
		// in clock ticks of 1/100 s (USER_HZ, as procfs assumes).
		if i := strings.LastIndexByte(string(data), ')'); i > 0 {
			if f := strings.Fields(string(data[i+1:])); len(f) > 13 {
				ut, err1 := strconv.ParseUint(f[11], 10, 64)
				st, err2 := strconv.ParseUint(f[12], 10, 64)
				if err1 == nil && err2 == nil {
					family(w, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
					sample(w, "process_cpu_seconds_total", "", float64(ut+st)/100)
				}
			}
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		family(w, "process_open_fds", "gauge", "Number of open file descriptors.")
		sample(w, "process_open_fds", "", float64(len(fds)))
	}
}

func family(w *bufio.Writer, name, typ, help string) {
	help = strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help)
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func sample(w *bufio.Writer, name, labels string, v float64) {
	fmt.Fprintf(w, "%s%s %s\n", name, labels, formatFloat(v))
}

// labels formats name, value pairs, given in name order, with the values escaped.
func labels(pairs ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pairs[i])
		b.WriteString(`="`)
		b.WriteString(esc.Replace(pairs[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func sortedKeys[V any](m map[[2]string]V) [][2]string {
	keys := make([][2]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	return keys
}

// Listen binds addr (host:port) for Serve, so that a taken or wrong address is an error
// at start rather than a log line later.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves /metrics on ln until ctx ends, then closes it.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log zerolog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info().Str("listen", ln.Addr().String()).Msg("serving metrics at /metrics")
	select {
	case err := <-done:
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutCtx)
	if serr := <-done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
