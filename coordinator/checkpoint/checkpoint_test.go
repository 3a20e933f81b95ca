package checkpoint_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/checkpoint"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// env is a real SQLite store with some audit entries and a checkpoint key.
type env struct {
	t   *testing.T
	dsn string
	st  store.Store
	key ed25519.PrivateKey
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dsn: filepath.Join(dir, "coordinator.db")}
	st, err := store.Open(t.Context(), store.Config{Driver: store.DriverSQLite, DSN: e.dsn}, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e.st = st
	key, created, err := checkpoint.LoadOrCreateKey(filepath.Join(dir, checkpoint.KeyFile))
	if err != nil || !created {
		t.Fatalf("key: created %v, %v", created, err)
	}
	e.key = key
	e.append(3)
	return e
}

func (e *env) append(n int) {
	e.t.Helper()
	for range n {
		if err := e.st.InTx(e.t.Context(), func(tx store.Tx) error {
			_, err := tx.AppendAudit(e.t.Context(), audit.Entry{Actor: "admin", Action: audit.ActionUserCreated}, audit.Seal)
			return err
		}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) checkpointer(sinks ...checkpoint.Sink) *checkpoint.Checkpointer {
	e.t.Helper()
	c, err := checkpoint.New(checkpoint.Options{Store: e.st, Key: e.key, Sinks: sinks, Interval: 5 * time.Millisecond,
		Logger: zerolog.New(zerolog.NewTestWriter(e.t))})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// sqlite changes the database behind the store's back, as an intruder would.
func (e *env) sqlite(stmts ...string) {
	e.t.Helper()
	db, err := sql.Open("sqlite", e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	for _, s := range stmts {
		if _, err := db.ExecContext(e.t.Context(), s); err != nil {
			e.t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), checkpoint.KeyFile)
	key, created, err := checkpoint.LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	again, created, err := checkpoint.LoadOrCreateKey(path)
	if err != nil || created || !again.Equal(key) {
		t.Fatalf("second start: created %v, same key %v, %v", created, again.Equal(key), err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := checkpoint.LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key open to others: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := checkpoint.LoadOrCreateKey(bad); err == nil {
		t.Fatal("garbage loaded as a key")
	}
}

// TestMakeAndSyslog makes checkpoints, keeps them, and sends them to a real syslog
// listener on loopback UDP.
func TestMakeAndSyslog(t *testing.T) {
	e := newEnv(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	sink, err := checkpoint.DialSyslog("udp://" + pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sink.Close() }()
	c := e.checkpointer(sink)

	cp, err := c.Make(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	head, err := e.st.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != head.Seq || cp.Hash != head.Hash || head.Seq != 3 {
		t.Fatalf("checkpoint %+v of head %+v", cp, head)
	}
	if err := audit.VerifyCheckpoint(c.PublicKey(), cp); err != nil {
		t.Fatal(err)
	}

	// The syslog message carries the checkpoint's JSON, as an auditor would keep it.
	if err := pc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no syslog message: %v", err)
	}
	msg := string(buf[:n])
	if !strings.HasPrefix(msg, "<37>") || !strings.Contains(msg, checkpoint.SyslogTag+"[") {
		t.Errorf("syslog message %q: want priority auth.notice (37) and tag %s", msg, checkpoint.SyslogTag)
	}
	_, js, ok := strings.Cut(msg, checkpoint.SyslogPrefix)
	if !ok {
		t.Fatalf("syslog message %q has no checkpoint", msg)
	}
	var got audit.Checkpoint
	if err := json.Unmarshal([]byte(strings.TrimSpace(js)), &got); err != nil {
		t.Fatalf("syslog checkpoint %q: %v", js, err)
	}
	if err := audit.VerifyCheckpoint(c.PublicKey(), got); err != nil || got.Seq != cp.Seq || !bytes.Equal(got.Signature, cp.Signature) {
		t.Fatalf("syslog checkpoint %+v (%v), want %+v", got, err, cp)
	}

	// The log grows; the next checkpoint follows the last and both are kept.
	e.append(2)
	cp2, err := c.Make(t.Context())
	if err != nil || cp2.Seq != 5 {
		t.Fatalf("second checkpoint %+v, %v", cp2, err)
	}
	kept, _, err := c.List(t.Context(), store.Page{})
	if err != nil || len(kept) != 2 || kept[0].Seq != 5 || kept[1].Seq != 3 {
		t.Fatalf("kept %+v, %v", kept, err)
	}
}

// TestRefusesTamperedLog: a log that no longer follows the last checkpoint is not signed.
func TestRefusesTamperedLog(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stmts []string
		kind  audit.Kind
	}{
		{"tail cut", []string{
			"DROP TRIGGER audit_log_no_delete",
			"DELETE FROM audit_log WHERE seq >= 4",
			"UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3)",
		}, audit.KindRemoved},
		{"checkpointed entry edited", []string{
			"DROP TRIGGER audit_log_no_update",
			"UPDATE audit_log SET reason = 'x' WHERE seq = 5",
		}, audit.KindEdited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.append(2)
			c := e.checkpointer()
			if _, err := c.Make(t.Context()); err != nil {
				t.Fatal(err)
			}
			e.sqlite(tc.stmts...)
			_, err := c.Make(t.Context())
			var ve *audit.VerifyError
			if !errors.Is(err, checkpoint.ErrContradicted) || !errors.As(err, &ve) || ve.Kind != tc.kind {
				t.Fatalf("got %v, want %s refused", err, tc.kind)
			}
			if kept, _, _ := c.List(t.Context(), store.Page{}); len(kept) != 1 {
				t.Fatalf("%d checkpoints kept, want 1", len(kept))
			}
		})
	}
}

// TestRun makes checkpoints periodically until stopped.
func TestRun(t *testing.T) {
	e := newEnv(t)
	c := e.checkpointer()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		kept, _, err := c.List(t.Context(), store.Page{})
		if err != nil {
			t.Fatal(err)
		}
		if len(kept) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d periodic checkpoints after 30s", len(kept))
		}
		select {
		case <-done:
			t.Fatal("Run returned early")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}
