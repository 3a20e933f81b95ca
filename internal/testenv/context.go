package testenv

import (
	"context"
	"testing"
	"time"
)

// deadlineMargin is left between a test's context ending and the test binary's own
// timeout, so that a test whose work runs late fails with its own message first.
const deadlineMargin = 30 * time.Second

// Context is a context for a test's work that ends when the test ends, or shortly before
// `go test -timeout` would stop the whole binary: a limit of its own would fail a test that
// a busy machine only makes slow, which the run's timeout already bounds.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	if tt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := tt.Deadline(); ok {
			cancel()
			ctx, cancel = context.WithDeadline(context.Background(), d.Add(-deadlineMargin))
		}
	}
	t.Cleanup(cancel)
	return ctx
}
