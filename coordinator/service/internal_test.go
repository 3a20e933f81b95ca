package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func sqliteService(t *testing.T) *Service {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st, err := store.Open(context.Background(), store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "s.db")}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	s, err := New(Options{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUpdateRetriesLostCompareAndSet(t *testing.T) {
	ctx := context.Background()
	s := sqliteService(t)
	tests := []struct {
		name     string
		lose     int // attempts that lose the race
		wantRuns int
		wantErr  Code
	}{
		{"wins at once", 0, 1, ""},
		{"wins on the third read", 2, 3, ""},
		{"never wins", 100, maxTxAttempts, CodeConflict},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			name := fmt.Sprintf("org-%d", i)
			err := s.update(ctx, func(tx *txn) error {
				runs++
				if _, err := tx.CreateOrganisation(ctx, store.Organisation{Name: name}); err != nil {
					return err
				}
				if runs <= tc.lose {
					return casLost(fmt.Errorf("job x: %w", store.ErrConflict))
				}
				return nil
			})
			if runs != tc.wantRuns {
				t.Fatalf("ran %d times, want %d", runs, tc.wantRuns)
			}
			_, gerr := s.st.GetOrganisationByName(ctx, name)
			if tc.wantErr == "" {
				if err != nil || gerr != nil {
					t.Fatalf("update: %v; org: %v", err, gerr)
				}
				return
			}
			if !errors.Is(err, &Error{Code: tc.wantErr}) {
				t.Fatalf("got %v, want %s", err, tc.wantErr)
			}
			if !errors.Is(gerr, store.ErrNotFound) {
				t.Fatalf("a failed update left its writes: %v", gerr)
			}
		})
	}
}

func TestRefusalKeepsItsAuditEntry(t *testing.T) {
	ctx := context.Background()
	s := sqliteService(t)
	actor := store.User{ID: "u1", Username: "mallory"}
	err := s.deny(ctx, actor, "do something", "", "thing:1", forbidden("no"))
	if !errors.Is(err, &Error{Code: CodeForbidden}) {
		t.Fatalf("got %v", err)
	}
	head, err := s.st.AuditHead(ctx)
	if err != nil || head.Seq != 1 {
		t.Fatalf("head %+v, %v", head, err)
	}
	es, _, err := s.st.ListAudit(ctx, store.AuditFilter{}, store.Page{})
	if err != nil || len(es) != 1 || es[0].Action != audit.ActionAccessDenied || es[0].Actor != "u1" || es[0].Target != "thing:1" {
		t.Fatalf("entries %+v, %v", es, err)
	}
}

func TestDenialLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		key        string
		at         time.Duration
		allow      bool
		suppressed int
	}{
		{"a", 0, true, 0},
		{"a", time.Second, false, 0},
		{"b", time.Second, true, 0},
		{"a", 30 * time.Second, false, 0},
		{"a", 61 * time.Second, true, 2},
		{"a", 62 * time.Second, false, 0},
		{"a", 3 * time.Minute, true, 1},
		{"b", 3 * time.Minute, true, 0},
	}
	l := newDenialLimiter()
	for i, st := range steps {
		n, ok := l.allow(st.key, t0.Add(st.at))
		if ok != st.allow || n != st.suppressed {
			t.Fatalf("step %d: allow %v suppressed %d, want %v %d", i, ok, n, st.allow, st.suppressed)
		}
	}
}

func TestDenialLimiterBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newDenialLimiter()
	allowed := 0
	for i := range maxTracked + 500 {
		if _, ok := l.allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), t0); ok {
			allowed++
		}
	}
	// Past the bound, the remaining sources share one key: one more entry, not 500.
	if allowed != maxTracked+1 || len(l.keys) != maxTracked+1 {
		t.Fatalf("allowed %d, tracking %d", allowed, len(l.keys))
	}
}

func TestTokenUseLog(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newTokenUseLog()
	steps := []struct {
		id    string
		at    time.Duration
		claim bool
	}{
		{"t1", 0, true},
		{"t1", time.Minute, false},
		{"t2", time.Minute, true},
		{"t1", 59 * time.Minute, false},
		{"t1", 60 * time.Minute, true},
		{"t1", 61 * time.Minute, false},
	}
	for i, st := range steps {
		if got := l.claim(st.id, t0.Add(st.at)); got != st.claim {
			t.Fatalf("step %d: claim %v, want %v", i, got, st.claim)
		}
	}
	l.release("t1")
	if !l.claim("t1", t0.Add(62*time.Minute)) {
		t.Fatal("a released claim is not free again")
	}
}

func TestYAMLField(t *testing.T) {
	doc := "name: a\nkey: {type: rsa, size: x}\napproval:\n  roles:\n    - approver\n    - boss\n---\nname: b\npin_policy:\n  min_length: six\n"
	tests := []struct {
		msg, want string
	}{
		{"line 1: oops", "name"},
		{"line 2: cannot unmarshal", "key.type"},
		{"line 2: cannot unmarshal !!str `x` into int", "key.size"},
		{"line 6: bad role", "approval.roles[1]"},
		{"line 10: cannot unmarshal !!str `six`", "pin_policy.min_length"},
		{"line 99: nothing there", ""},
		{"no line at all", ""},
	}
	for _, tc := range tests {
		if got := YAMLField([]byte(doc), tc.msg); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.msg, got, tc.want)
		}
	}
}

func TestAsError(t *testing.T) {
	tests := []struct {
		err  error
		code Code
	}{
		{fmt.Errorf("x: %w", store.ErrNotFound), CodeNotFound},
		{fmt.Errorf("x: %w", store.ErrConflict), CodeConflict},
		{fmt.Errorf("x: %w", store.ErrInvalid), CodeBadRequest},
		{context.Canceled, CodeInternal},
		{errors.New("disk on fire"), CodeInternal},
		{badRequest("f", "m"), CodeBadRequest},
	}
	for _, tc := range tests {
		if got := AsError(tc.err); got.Code != tc.code {
			t.Errorf("%v: %s, want %s", tc.err, got.Code, tc.code)
		}
	}
	if e := AsError(errors.New("secret detail")); e.Msg != "internal error" {
		t.Errorf("internal error shows %q", e.Msg)
	}
}
