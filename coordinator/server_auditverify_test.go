package coordinator_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestVerifyAuditWithTheServersKey: the service verifies the audit log against the
// checkpoints the server signs with its own key (the console's "Verify the audit log").
func TestVerifyAuditWithTheServersKey(t *testing.T) {
	t.Parallel()
	cfg := localConfig(filepath.Join(t.TempDir(), "data"))
	cfg.Broker.URL = coordinatortest.NoBroker
	r := start(t, cfg)
	ctx := t.Context()
	admin, err := r.srv.Store().GetUserByUsername(ctx, service.BootstrapUsername)
	if err != nil {
		t.Fatal(err)
	}
	// The server signs a checkpoint when it starts.
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		kept, _, err := r.srv.Store().ListAuditCheckpoints(ctx, store.Page{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(kept) > 0 {
			break
		}
		select {
		case <-deadline.C:
			t.Fatal("no checkpoint 30 s after the start")
		case <-tick.C:
		}
	}
	res, err := r.srv.Service().VerifyAudit(ctx, service.ActorFor(admin))
	if err != nil || !res.Verified() || res.NoKey || res.Checkpoints < 1 || res.OtherKey != 0 || res.Entries < 1 {
		t.Fatalf("verification on the server: %+v, %v", res, err)
	}
}
