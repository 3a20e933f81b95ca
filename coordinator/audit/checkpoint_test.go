package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func headOf(e Entry) Head { return Head{Seq: e.Seq, Hash: e.Hash} }

func sign(t *testing.T, priv ed25519.PrivateKey, h Head) Checkpoint {
	t.Helper()
	c, err := SignCheckpoint(priv, h, t0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckpointSignVerify(t *testing.T) {
	pub, priv := newKey(t)
	es := chain(5)
	c := sign(t, priv, headOf(es[4]))
	if c.Seq != 5 || c.Hash != es[4].Hash || !c.Time.Equal(t0.Truncate(time.Microsecond)) || c.KeyID != CheckpointKeyID(pub) {
		t.Fatalf("checkpoint %+v", c)
	}
	if err := VerifyCheckpoint(pub, c); err != nil {
		t.Fatal(err)
	}
	// Through JSON and back, as an auditor keeps it.
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back Checkpoint
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if err := VerifyCheckpoint(pub, back); err != nil {
		t.Fatalf("after JSON: %v\n%s", err, raw)
	}
	// The empty log has a checkpoint too.
	empty := sign(t, priv, Head{})
	if empty.Seq != 0 || empty.Hash != GenesisHash {
		t.Fatalf("empty log checkpoint %+v", empty)
	}
	if err := VerifyCheckpoint(pub, empty); err != nil {
		t.Fatal(err)
	}
	// The public key round-trips through PEM.
	p, err := MarshalCheckpointPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCheckpointPublicKey(p)
	if err != nil || !got.Equal(pub) {
		t.Fatalf("parsed key %x, %v", got, err)
	}
	if _, err := ParseCheckpointPublicKey([]byte("not a key")); err == nil {
		t.Fatal("garbage parsed as a key")
	}
}

func TestCheckpointTampered(t *testing.T) {
	pub, priv := newKey(t)
	es := chain(5)
	good := sign(t, priv, headOf(es[4]))
	for _, tc := range []struct {
		name string
		mod  func(c *Checkpoint)
		want string
	}{
		{"seq", func(c *Checkpoint) { c.Seq = 4 }, "altered"},
		{"hash", func(c *Checkpoint) { c.Hash = es[3].Hash }, "altered"},
		{"time", func(c *Checkpoint) { c.Time = c.Time.Add(time.Microsecond) }, "altered"},
		{"signature", func(c *Checkpoint) { c.Signature = bytes.Clone(c.Signature); c.Signature[7] ^= 1 }, "altered"},
		{"no signature", func(c *Checkpoint) { c.Signature = nil }, "altered"},
		{"key id", func(c *Checkpoint) { c.KeyID = "0011223344556677" }, "signed with key 0011223344556677"},
		{"malformed hash", func(c *Checkpoint) { c.Hash = "zz" }, "not 64 hex digits"},
		{"negative seq", func(c *Checkpoint) { c.Seq = -1 }, "negative"},
		{"no time", func(c *Checkpoint) { c.Time = time.Time{} }, "no time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := VerifyCheckpoint(pub, c)
			if !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrBadCheckpoint saying %q", err, tc.want)
			}
		})
	}
}

func TestCheckpointWrongKey(t *testing.T) {
	_, priv := newKey(t)
	other, _ := newKey(t)
	c := sign(t, priv, headOf(chain(2)[1]))
	err := VerifyCheckpoint(other, c)
	if !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), "not with key "+CheckpointKeyID(other)) {
		t.Fatalf("got %v", err)
	}
	// Even with the key ID forged to match, the signature gives it away.
	c.KeyID = CheckpointKeyID(other)
	if err := VerifyCheckpoint(other, c); !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), "altered") {
		t.Fatalf("got %v", err)
	}
}

// wantBroken checks a VerifyError's entry, kind and checkpoint.
func wantBroken(t *testing.T, err error, seq int64, kind Kind, cp *Checkpoint, says ...string) {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) {
		t.Fatalf("got %v, want a VerifyError", err)
	}
	if ve.Seq != seq || ve.Kind != kind {
		t.Fatalf("got entry %d %s (%s), want entry %d %s", ve.Seq, ve.Kind, ve.Detail, seq, kind)
	}
	switch {
	case cp == nil && ve.Checkpoint != nil:
		t.Fatalf("names checkpoint %v, want none", ve.Checkpoint)
	case cp != nil && (ve.Checkpoint == nil || ve.Checkpoint.Seq != cp.Seq || ve.Checkpoint.Hash != cp.Hash):
		t.Fatalf("names checkpoint %v, want %v", ve.Checkpoint, cp)
	}
	for _, s := range says {
		if !strings.Contains(ve.Detail, s) {
			t.Errorf("detail %q does not say %q", ve.Detail, s)
		}
	}
}

// rewrite recomputes the chain from index i on after changing entry i's reason, as an
// intruder who holds the database but not the checkpoint key would.
func rewrite(es []Entry, i int) []Entry {
	out := clone(es)
	out[i].Reason = "nothing to see"
	for j := i; j < len(out); j++ {
		var prev *Entry
		if j > 0 {
			prev = &out[j-1]
		}
		out[j] = Next(prev, out[j])
	}
	return out
}

func TestCheckpointsCatchCutAndRewrittenTails(t *testing.T) {
	_, priv := newKey(t)
	es := chain(10)
	at7 := sign(t, priv, headOf(es[6]))
	at10 := sign(t, priv, headOf(es[9]))
	verify := func(cps []Checkpoint, entries []Entry) error {
		_, err := VerifySeqCheckpoints(Head{}, cps, sliceSeq(entries))
		return err
	}

	// The intact log matches every checkpoint, also one at its very end.
	if err := verify([]Checkpoint{at7, at10}, es); err != nil {
		t.Fatal(err)
	}
	// A log that grew since matches too.
	if err := verify([]Checkpoint{at7}, es); err != nil {
		t.Fatal(err)
	}

	// Cut: without a checkpoint the prefix verifies; with one it does not.
	if err := verify(nil, es[:8]); err != nil {
		t.Fatalf("a cut log without checkpoints: %v", err)
	}
	wantBroken(t, verify([]Checkpoint{at7, at10}, es[:8]), 9, KindRemoved, &at10,
		"the log ends at entry 8", "reached entry 10", "entries 9 to 10 were cut")
	wantBroken(t, verify([]Checkpoint{at10}, es[:9]), 10, KindRemoved, &at10, "entry 10 was cut")

	// Cut, then the coordinator went on appending: the new entries at the old numbers do
	// not carry the checkpoint's hash.
	regrown := append(clone(es[:9]), Next(&es[8], Entry{Time: t0, Actor: "x", Action: ActionUserCreated}))
	if err := verify(nil, regrown); err != nil {
		t.Fatal(err)
	}
	wantBroken(t, verify([]Checkpoint{at10}, regrown), 10, KindRewritten, &at10, "the log's has hash "+regrown[9].Hash)

	// Rewritten from entry 8 (index 7) on: a valid chain, but not the one signed.
	rw := rewrite(es, 7)
	if err := verify(nil, rw); err != nil {
		t.Fatalf("a rewritten log without checkpoints: %v", err)
	}
	wantBroken(t, verify([]Checkpoint{at7, at10}, rw), 10, KindRewritten, &at10,
		"says entry 10 has hash "+es[9].Hash, "some entry after 7 (the last checkpoint it matched)")
	// Rewritten before a checkpoint: the earliest checkpoint it contradicts is named.
	rw = rewrite(es, 2)
	wantBroken(t, verify([]Checkpoint{at10, at7}, rw), 7, KindRewritten, &at7, "rewritten from some entry up to here")

	// A broken chain is reported as such, before any checkpoint.
	edited := clone(es)
	edited[3].Actor = "mallory"
	wantBroken(t, verify([]Checkpoint{at10}, edited), 4, KindEdited, nil)

	// Resuming after a checkpoint's entry ignores it.
	if _, err := VerifySeqCheckpoints(headOf(es[7]), []Checkpoint{at7, at10}, sliceSeq(es[8:])); err != nil {
		t.Fatal(err)
	}
}

// A row the store could not read is reported as edited, naming what could not be read.
func TestUnreadableEntry(t *testing.T) {
	es := chain(4)
	es[2].Unreadable = `at holds "2026-13-45 xx", which is not a time`
	es[2].Time = time.Time{}
	err := Verify(es)
	wantBroken(t, err, 3, KindEdited, nil, "cannot be read", "2026-13-45 xx")
}
