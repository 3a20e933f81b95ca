package ctl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// The CSV for software distribution: a header, then one line per secret, quoted where a
// field needs it, times in UTC.
func TestWriteSecretsCSV(t *testing.T) {
	t.Parallel()
	paris := time.FixedZone("CEST", 2*3600)
	var b bytes.Buffer
	err := writeSecretsCSV(&b, []client.EnrolmentKey{
		{ID: "c1", Secret: "tfe_c1_aaaa", AgentID: "alice@ts-01", Expires: time.Date(2025, 6, 22, 14, 0, 0, 0, paris)},
		{ID: "c2", Secret: "tfe_c2_bbbb", Expires: time.Date(2025, 6, 1, 12, 15, 0, 500, time.UTC)},
		{ID: "c,3", Secret: `tfe "q"`},
	})
	want := "id,secret,agent_id,expires\n" +
		"c1,tfe_c1_aaaa,alice@ts-01,2025-06-22T12:00:00Z\n" +
		"c2,tfe_c2_bbbb,,2025-06-01T12:15:00Z\n" +
		`"c,3","tfe ""q""",,` + "\n"
	if err != nil || b.String() != want {
		t.Errorf("got %v\n%s\nwant\n%s", err, b.String(), want)
	}
}

// --out makes a new file of mode 0600, refuses an existing one, and removes the file a
// failure left empty.
func TestOpenOutput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := &env{}
	path := filepath.Join(dir, "codes.csv")
	w, finish, err := openOutput(e, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("id,secret\n")); err != nil {
		t.Fatal(err)
	}
	if err := finish(nil); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stat: %v %v", st, err)
	}
	if _, _, err := openOutput(e, path); err == nil || !strings.Contains(err.Error(), "exists: it is not overwritten") {
		t.Errorf("an existing file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "id,secret\n" {
		t.Errorf("the existing file now holds %q", b)
	}

	failed := filepath.Join(dir, "failed.csv")
	_, finish, err = openOutput(e, failed)
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused")
	if err := finish(refused); !errors.Is(err, refused) {
		t.Errorf("finish passed on %v", err)
	}
	if _, err := os.Stat(failed); !os.IsNotExist(err) {
		t.Errorf("an empty file was left after a failure: %v", err)
	}

	var out bytes.Buffer
	e.stdout = &out
	w, finish, err = openOutput(e, "")
	if err != nil || w != &out || finish(nil) != nil {
		t.Errorf("without --out: %v", err)
	}
}

func TestKeyStatus(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	later := now.Add(time.Hour)
	for _, tt := range []struct {
		k    client.EnrolmentKey
		want string
	}{
		{client.EnrolmentKey{Expires: later, MaxUses: 1}, "usable"},
		{client.EnrolmentKey{Expires: later}, "usable"}, // a key without a use limit
		{client.EnrolmentKey{Expires: later, MaxUses: 10, Uses: 10}, "used up"},
		{client.EnrolmentKey{Expires: now, MaxUses: 1}, "expired"},
		{client.EnrolmentKey{Expires: later, MaxUses: 1, Uses: 1, Revoked: now.Add(-time.Minute)}, "revoked 2025-06-01T11:59:00Z"},
	} {
		if got := keyStatus(tt.k, now); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.k, got, tt.want)
		}
	}
}
