package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

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
				if _, err := tx.CreateOrganization(ctx, store.Organization{Name: name}); err != nil {
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
			_, gerr := s.st.GetOrganizationByName(ctx, name)
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
