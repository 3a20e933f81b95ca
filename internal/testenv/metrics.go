package testenv

import (
	"bufio"
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// PromtoolCheck runs `promtool check metrics` on a metrics page: names, units, help and
// types as Prometheus's conventions want them. promtool comes from the Debian package
// prometheus (scripts/ensure-deps.sh installs it); without it the test fails.
func PromtoolCheck(t testing.TB, page string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is needed to check the metrics' names: run scripts/ensure-deps.sh (Debian package prometheus): %v", err)
	}
	cmd := exec.CommandContext(t.Context(), path, "check", "metrics")
	cmd.Stdin = strings.NewReader(page)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// MetricValue finds a series on a metrics page, written as the text format writes it
// (labels sorted by name), e.g. `tokenfleet_agent_broker_up` or `x_total{code="a"}`.
func MetricValue(page, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(page))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// Label values may hold spaces ("SoftHSM v2"); the value is after the last one.
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || line[:i] != series {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		return v, err == nil
	}
	return 0, false
}
