package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// emptyProgram is the baseline: the Go runtime alone, waiting for a signal.
const emptyProgram = `package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
`

// BenchmarkAgentIdleRSS: the resident memory (VmRSS) of the built tokenfleet-agent, idle
// with one SoftHSM2 token and connected to RabbitMQ, against an empty Go program built
// with the same go tool in the same run. One agent runs for the whole benchmark; each
// iteration waits for its next heartbeat (every 200 ms), then reads both processes'
// VmRSS. Reported: the agent's largest idle RSS (rss_MB; the goal is 25 MB or less) and
// its two parts at that moment, anonymous memory (anon_MB: heap, stacks, the modules'
// own allocations) and pages of mapped files (file_MB: the executable and the shared
// libraries, SoftHSM2's and OpenSSL's among them; shared with every process that maps
// them, and dropped first when memory is short); the empty program's RSS (empty_go_MB)
// and anonymous part (empty_go_anon_MB); and ratio = rss_MB ÷ empty_go_MB.
func BenchmarkAgentIdleRSS(b *testing.B) {
	testenv.NewSoftHSMStore(b)
	br := testenv.NewBroker(b)
	testenv.InitToken(b, "idle-rss", "12345678", "87654321")

	// The coordinator's side: the shared topology, and the agent's heartbeats.
	ctx := testenv.Context(b)
	log := zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.WarnLevel)
	coord, err := amqp.Open(context.WithoutCancel(ctx), amqp.Config{URL: br.URL, Name: "scripted coordinator",
		Topology: amqp.DeclareShared, Backoff: fastBackoff, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = coord.Close() })
	beats := make(chan struct{}, 1)
	cons, err := coord.Consume(ctx, protocol.HeartbeatsQueue, amqp.ConsumeOptions{Senders: amqp.SenderSharedUser},
		func(context.Context, *amqp.Delivery) amqp.Outcome {
			select {
			case beats <- struct{}{}:
			default:
			}
			return amqp.Ack()
		})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cons.Close)

	empty := startIdle(b, buildEmptyProgram(b))
	logs := newLogBuffer()
	id := testenv.UniqueUser("ws-")
	agentProc := startIdle(b, exec.Command(testenv.Binary(b, "./agent/cmd/tokenfleet-agent"), "run",
		"--broker", br.URL, "--id", id, "--data", filepath.Join(b.TempDir(), "data"), "--module", testenv.SoftHSMModule,
		"--log-format", "json", "--log-level", "info", "--heartbeat-interval", "200ms"), logs)
	logs.waitFor(b, `"hello sent"`, `"tokens":1`)
	// Idle: the start is over once a few heartbeats went by.
	for range 3 {
		receiveBeat(b, beats)
	}

	var agentMax, emptyMax rss
	for b.Loop() {
		receiveBeat(b, beats)
		if m := readRSS(b, agentProc.Process.Pid); m.total > agentMax.total {
			agentMax = m
		}
		if m := readRSS(b, empty.Process.Pid); m.total > emptyMax.total {
			emptyMax = m
		}
	}
	const mb = 1 << 20
	b.ReportMetric(float64(agentMax.total)/mb, "rss_MB")
	b.ReportMetric(float64(agentMax.anon)/mb, "anon_MB")
	b.ReportMetric(float64(agentMax.file)/mb, "file_MB")
	b.ReportMetric(float64(emptyMax.total)/mb, "empty_go_MB")
	b.ReportMetric(float64(emptyMax.anon)/mb, "empty_go_anon_MB")
	b.ReportMetric(float64(agentMax.total)/float64(emptyMax.total), "ratio")
}

func receiveBeat(b *testing.B, beats <-chan struct{}) {
	b.Helper()
	select {
	case <-beats:
	case <-time.After(waitLimit):
		b.Fatalf("no heartbeat from the agent within %v", waitLimit)
	}
}

// buildEmptyProgram builds emptyProgram with the go tool on PATH.
func buildEmptyProgram(b *testing.B) *exec.Cmd {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(emptyProgram), 0o600); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "empty")
	build := exec.Command("go", "build", "-o", out, "main.go")
	build.Dir = dir
	if msg, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the empty program: %v\n%s", err, msg)
	}
	return exec.Command(out)
}

// startIdle starts cmd (its output into logs, if given) and stops it when the benchmark
// ends.
func startIdle(b *testing.B, cmd *exec.Cmd, logs ...*logBuffer) *exec.Cmd {
	b.Helper()
	if len(logs) > 0 {
		cmd.Stdout, cmd.Stderr = logs[0], logs[0]
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(waitLimit):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd
}

// rss is a process's resident set size and its anonymous and file-backed parts, in bytes.
type rss struct{ total, anon, file int64 }

// readRSS reads VmRSS, RssAnon and RssFile from /proc/PID/status.
func readRSS(b *testing.B, pid int) rss {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var (
		out   rss
		found int
	)
	fields := map[string]*int64{"VmRSS:": &out.total, "RssAnon:": &out.anon, "RssFile:": &out.file}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), "\t")
		if dst := fields[name]; ok && dst != nil {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("%s of process %d: %q: %v", name, pid, v, err)
			}
			*dst = kb << 10
			found++
		}
	}
	if found != len(fields) {
		b.Fatalf("/proc/%d/status lacks VmRSS, RssAnon or RssFile (err %v)", pid, sc.Err())
	}
	return out
}
