package httpapi_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/api/apitest"
	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/checkpoint"
	"github.com/tokenfleet/tokenfleet/coordinator/httpapi"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

type checkpointJSON struct {
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`
	Signature []byte    `json:"signature"`
}

func (c checkpointJSON) checkpoint() audit.Checkpoint {
	return audit.Checkpoint{Seq: c.Seq, Hash: c.Hash, Time: c.Time, KeyID: c.KeyID, Signature: c.Signature}
}

// apiCheckpoints gives the API the checkpointer with the service's page type, as the
// coordinator does.
type apiCheckpoints struct{ *checkpoint.Checkpointer }

func (c apiCheckpoints) List(ctx context.Context, p service.Page) ([]audit.Checkpoint, string, error) {
	return c.Checkpointer.List(ctx, store.Page{Limit: p.Limit, Cursor: p.Cursor})
}

// withCheckpoints serves the env's service again, with a real checkpointer.
func (e *env) withCheckpoints(t *testing.T) *checkpoint.Checkpointer {
	t.Helper()
	key, _, err := checkpoint.LoadOrCreateKey(filepath.Join(t.TempDir(), checkpoint.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	cps, err := checkpoint.New(checkpoint.Options{Store: e.st, Key: key, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Options{Service: e.svc, Logger: log, Registry: prometheus.NewRegistry(), Checkpoints: apiCheckpoints{cps}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(apitest.Handler(t, h))
	t.Cleanup(srv.Close)
	e.srv = srv
	return cps
}

func TestAuditCheckpointEndpoints(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	// Without a checkpointer the endpoints say so.
	wantErr(t, e.as(t, "aud", "POST", "/api/v1/audit/checkpoints", nil), 404, "not_found", "")
	wantErr(t, e.do(t, "GET", "/api/v1/audit/checkpoint-key", "", nil), 404, "not_found", "")

	cps := e.withCheckpoints(t)
	key := ok[struct {
		Algorithm string `json:"algorithm"`
		KeyID     string `json:"key_id"`
		PEM       string `json:"pem"`
	}](t, e.do(t, "GET", "/api/v1/audit/checkpoint-key", "", nil), 200)
	pub, err := audit.ParseCheckpointPublicKey([]byte(key.PEM))
	if err != nil || !pub.Equal(cps.PublicKey()) || key.Algorithm != "ed25519" || key.KeyID != audit.CheckpointKeyID(pub) {
		t.Fatalf("checkpoint key %+v: %v", key, err)
	}

	var made []checkpointJSON
	for _, who := range []string{"aud", "admin"} {
		c := ok[checkpointJSON](t, e.as(t, who, "POST", "/api/v1/audit/checkpoints", nil), 201)
		if err := audit.VerifyCheckpoint(pub, c.checkpoint()); err != nil {
			t.Fatal(err)
		}
		made = append(made, c)
	}
	// The checkpoint is of the head at the time, which the request's own audit entries
	// (token use) may have moved.
	if head := e.auditHead(t); made[1].Seq > head || made[1].Seq < made[0].Seq {
		t.Fatalf("checkpoints of %d and %d, head %d", made[0].Seq, made[1].Seq, head)
	}

	type page struct {
		Items      []checkpointJSON `json:"items"`
		NextCursor string           `json:"next_cursor"`
	}
	p := ok[page](t, e.as(t, "aud", "GET", "/api/v1/audit/checkpoints?limit=1", nil), 200)
	if len(p.Items) != 1 || p.Items[0].Seq != made[1].Seq || string(p.Items[0].Signature) != string(made[1].Signature) || p.NextCursor == "" {
		t.Fatalf("first page %+v", p)
	}
	p = ok[page](t, e.as(t, "aud", "GET", "/api/v1/audit/checkpoints?limit=1&cursor="+p.NextCursor, nil), 200)
	if len(p.Items) != 1 || p.Items[0].Seq != made[0].Seq {
		t.Fatalf("second page %+v", p)
	}

	for _, who := range []string{"hd", "ap1", "ca", "ann"} {
		wantErr(t, e.as(t, who, "GET", "/api/v1/audit/checkpoints", nil), 403, "forbidden", "")
		wantErr(t, e.as(t, who, "POST", "/api/v1/audit/checkpoints", nil), 403, "forbidden", "")
	}
	wantErr(t, e.do(t, "POST", "/api/v1/audit/checkpoints", "", nil), 401, "unauthenticated", "")
	wantErr(t, e.as(t, "aud", "GET", "/api/v1/audit/checkpoints?cursor=!!", nil), 400, "bad_request", "-")
	wantErr(t, e.as(t, "aud", "POST", "/api/v1/audit/checkpoints?now=1", nil), 400, "bad_request", "now")
}
