package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 123456789, time.UTC)

// chain builds n valid entries with varied content.
func chain(n int) []Entry {
	var out []Entry
	var prev *Entry
	for i := range n {
		e := Entry{
			Time:   t0.Add(time.Duration(i) * time.Second),
			Actor:  fmt.Sprintf("user-%d", i%3),
			Action: []string{ActionJobCreated, ActionJobApproved, ActionJobTransition, ActionAccessDenied}[i%4],
			JobID:  fmt.Sprintf("job-%d", i/2),
			Target: "agent:ws-1",
			Reason: strings.Repeat("r", i%2),
		}
		if i%2 == 0 {
			e.Details = json.RawMessage(fmt.Sprintf(`{"from": "approved", "to": "dispatched", "attempt": %d}`, i))
		}
		next := Next(prev, e)
		out = append(out, next)
		prev = &out[len(out)-1]
	}
	return out
}

func clone(es []Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		e.Details = bytes.Clone(e.Details)
		out[i] = e
	}
	return out
}

func TestNext(t *testing.T) {
	loc := time.FixedZone("CET", 3600)
	details := json.RawMessage(`{ "k" : "v<w>" }`)
	first := Next(nil, Entry{Time: t0.In(loc), Actor: "u", Action: ActionUserCreated, Details: details})
	if first.Seq != 1 || first.PrevHash != GenesisHash || first.Hash != ComputeHash(first) || len(first.Hash) != 64 {
		t.Fatalf("first %+v", first)
	}
	if first.Time.Location() != time.UTC || first.Time.Nanosecond() != 123456000 || !first.Time.Equal(t0.Truncate(time.Microsecond)) {
		t.Errorf("time %v not UTC microseconds", first.Time)
	}
	if string(first.Details) != `{"k":"v\u003cw\u003e"}` {
		t.Errorf("details not in canonical form: %s", first.Details)
	}
	details[3] = 'X'
	if string(first.Details) != `{"k":"v\u003cw\u003e"}` {
		t.Error("entry shares the caller's details bytes")
	}
	for _, empty := range []string{"", "null", " {} "} {
		if e := Next(nil, Entry{Time: t0, Actor: "u", Action: ActionUserCreated, Details: json.RawMessage(empty)}); e.Details != nil {
			t.Errorf("details %q kept as %q", empty, e.Details)
		}
	}
	second := Next(&first, Entry{Time: t0, Actor: "u", Action: ActionOrgCreated})
	if second.Seq != 2 || second.PrevHash != first.Hash {
		t.Fatalf("second %+v", second)
	}
	if err := Verify([]Entry{first, second}); err != nil {
		t.Fatal(err)
	}
}

func TestValidChainVerifies(t *testing.T) {
	es := chain(50)
	if err := Verify(es); err != nil {
		t.Fatal(err)
	}
	if err := Verify(nil); err != nil {
		t.Fatalf("empty log: %v", err)
	}
	head, err := VerifySeq(Head{}, sliceSeq(es))
	if err != nil || head != (Head{Seq: 50, Hash: es[49].Hash}) {
		t.Fatalf("VerifySeq: %+v, %v", head, err)
	}
}

// A log that went through JSON (or SQL) keeps verifying: times are whole microseconds in
// UTC, and nil and empty details hash alike.
func TestRoundTrip(t *testing.T) {
	es := chain(10)
	b, err := json.Marshal(es)
	if err != nil {
		t.Fatal(err)
	}
	var back []Entry
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for i := range back {
		if back[i].Details == nil {
			back[i].Details = json.RawMessage{}
		}
		back[i].Time = back[i].Time.In(time.FixedZone("X", -5*3600))
	}
	if err := Verify(back); err != nil {
		t.Fatal(err)
	}
}

func sliceSeq(es []Entry) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		for _, e := range es {
			if !yield(e, nil) {
				return
			}
		}
	}
}

func TestTampering(t *testing.T) {
	rehash := func(e *Entry) { e.Hash = ComputeHash(*e) }
	tests := []struct {
		name    string
		tamper  func(es []Entry) []Entry
		seq     int64
		kind    Kind
		details string
	}{
		{"field edited", func(es []Entry) []Entry { es[4].Actor = "admin"; return es }, 5, KindEdited, "does not match its hash"},
		{"details value edited", func(es []Entry) []Entry {
			es[6].Details = bytes.Replace(es[6].Details, []byte("dispatched"), []byte("succeeded"), 1)
			return es
		}, 7, KindEdited, "does not match"},
		{"details added", func(es []Entry) []Entry { es[1].Details = json.RawMessage(`{"x":""}`); return es }, 2, KindEdited, "does not match"},
		{"edited and re-hashed", func(es []Entry) []Entry { es[4].Reason = "nothing to see"; rehash(&es[4]); return es }, 5, KindEdited, "entry 6 does not link to it"},
		{"first entry forged", func(es []Entry) []Entry { es[0].PrevHash = strings.Repeat("1", 64); rehash(&es[0]); return es }, 1, KindEdited, "start of the chain"},
		{"seq edited", func(es []Entry) []Entry { es[3].Seq = 40; return es }, 4, KindEdited, "seq was changed to 40"},
		{"removed", func(es []Entry) []Entry { return append(es[:4], es[5:]...) }, 5, KindRemoved, "entry 6 follows entry 4"},
		{"several removed", func(es []Entry) []Entry { return append(es[:4], es[7:]...) }, 5, KindRemoved, "entries 5 to 7 are missing"},
		{"first removed", func(es []Entry) []Entry { return es[1:] }, 1, KindRemoved, "the log starts at entry 2"},
		{"removed and renumbered", func(es []Entry) []Entry {
			es = append(es[:4], es[6:]...)
			for i := 4; i < len(es); i++ {
				es[i].Seq -= 2
			}
			return es
		}, 5, KindRemoved, "written as entry 7: 2 entries were removed"},
		{"swapped", func(es []Entry) []Entry { es[4], es[5] = es[5], es[4]; return es }, 5, KindReordered, "appears after entry 6"},
		{"moved to the end", func(es []Entry) []Entry {
			moved := es[2]
			return append(append(es[:2], es[3:]...), moved)
		}, 3, KindReordered, "appears after entry 4"},
		{"duplicated", func(es []Entry) []Entry { return append(es[:5], append([]Entry{es[4]}, es[5:]...)...) }, 5, KindInserted, "second entry with seq 5"},
		{"forged entry slipped in", func(es []Entry) []Entry {
			forged := Next(&es[3], Entry{Time: t0, Actor: "mallory", Action: ActionJobApproved, JobID: "job-9"})
			return append(es[:4], append([]Entry{forged}, es[4:]...)...)
		}, 5, KindInserted, "second entry with seq 5"},
		{"first problem wins", func(es []Entry) []Entry { es[8].Actor = "x"; return append(es[:2], es[3:]...) }, 3, KindRemoved, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := tt.tamper(clone(chain(12)))
			err := Verify(es)
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) {
				t.Fatalf("got %v, want a VerifyError", err)
			}
			if ve.Seq != tt.seq || ve.Kind != tt.kind || !strings.Contains(ve.Detail, tt.details) {
				t.Fatalf("got %v, want entry %d %s (%s)", err, tt.seq, tt.kind, tt.details)
			}
			if ve.Code() != CodeChainBroken {
				t.Errorf("code %q", ve.Code())
			}
			// The streaming form agrees.
			if _, serr := VerifySeq(Head{}, sliceSeq(es)); serr == nil || serr.Error() != err.Error() {
				t.Errorf("VerifySeq: %v, Verify: %v", serr, err)
			}
		})
	}
}

// A plain chain cannot see its tail cut off: the prefix is a valid log. The head differs,
// which is what an anchor kept elsewhere would catch.
func TestTruncationNeedsAnAnchor(t *testing.T) {
	es := chain(10)
	head, err := VerifySeq(Head{}, sliceSeq(es[:7]))
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != 7 || head.Hash == es[9].Hash {
		t.Fatalf("head %+v", head)
	}
}

// Flipping any single byte of any field of any entry is detected and pinned on that entry.
func TestEverySingleByteFlipDetected(t *testing.T) {
	const n = 6
	base := chain(n)
	type mutation struct {
		field string
		apply func(e *Entry)
	}
	flipString := func(s string, i int, mask byte) string {
		b := []byte(s)
		b[i] ^= mask
		return string(b)
	}
	flips := 0
	for idx := range n {
		var muts []mutation
		e := base[idx]
		for _, mask := range []byte{0x01, 0x80} {
			for i := range 8 {
				muts = append(muts, mutation{fmt.Sprintf("seq byte %d ^%#x", i, mask), func(e *Entry) {
					var b [8]byte
					binary.BigEndian.PutUint64(b[:], uint64(e.Seq))
					b[i] ^= mask
					e.Seq = int64(binary.BigEndian.Uint64(b[:]))
				}})
				muts = append(muts, mutation{fmt.Sprintf("time byte %d ^%#x", i, mask), func(e *Entry) {
					var b [8]byte
					binary.BigEndian.PutUint64(b[:], uint64(e.Time.UnixMicro()))
					b[i] ^= mask
					e.Time = time.UnixMicro(int64(binary.BigEndian.Uint64(b[:]))).UTC()
				}})
			}
			strField := func(name string, get func(e *Entry) *string) {
				for i := range len(*get(&e)) {
					muts = append(muts, mutation{fmt.Sprintf("%s byte %d ^%#x", name, i, mask), func(e *Entry) {
						p := get(e)
						*p = flipString(*p, i, mask)
					}})
				}
			}
			strField("actor", func(e *Entry) *string { return &e.Actor })
			strField("action", func(e *Entry) *string { return &e.Action })
			strField("job_id", func(e *Entry) *string { return &e.JobID })
			strField("target", func(e *Entry) *string { return &e.Target })
			strField("reason", func(e *Entry) *string { return &e.Reason })
			strField("prev_hash", func(e *Entry) *string { return &e.PrevHash })
			strField("hash", func(e *Entry) *string { return &e.Hash })
			for i := range len(e.Details) {
				muts = append(muts, mutation{fmt.Sprintf("details byte %d ^%#x", i, mask), func(e *Entry) {
					e.Details[i] ^= mask
				}})
			}
		}
		for _, m := range muts {
			es := clone(base)
			m.apply(&es[idx])
			flips++
			err := Verify(es)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Errorf("entry %d, %s: not detected (%v)", idx+1, m.field, err)
				continue
			}
			if ve.Seq != int64(idx+1) || ve.Kind != KindEdited {
				t.Errorf("entry %d, %s: reported as %v", idx+1, m.field, err)
			}
		}
	}
	if flips < 500 {
		t.Fatalf("only %d mutations tried", flips)
	}
}

func TestResumeVerifier(t *testing.T) {
	es := chain(20)
	v := NewVerifier()
	for _, e := range es[:12] {
		if err := v.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	head := v.Head()
	if head != (Head{Seq: 12, Hash: es[11].Hash}) {
		t.Fatalf("head %+v", head)
	}
	// A later run reads only the new entries.
	if h, err := VerifySeq(head, sliceSeq(es[12:])); err != nil || h.Seq != 20 {
		t.Fatalf("resume: %+v, %v", h, err)
	}
	// Entry 12 rewritten after the checkpoint: entry 13 no longer links to the head.
	forged := clone(es)
	forged[12].PrevHash = strings.Repeat("a", 64)
	forged[12].Hash = ComputeHash(forged[12])
	_, err := VerifySeq(head, sliceSeq(forged[12:]))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Seq != 12 || ve.Kind != KindEdited {
		t.Fatalf("got %v, want entry 12 edited", err)
	}
	// Starting in the wrong place is a gap.
	if _, err := VerifySeq(head, sliceSeq(es[14:])); !errors.As(err, &ve) || ve.Seq != 13 || ve.Kind != KindRemoved {
		t.Fatalf("got %v, want entry 13 removed", err)
	}
}

func TestVerifierIsSticky(t *testing.T) {
	es := chain(5)
	es[1].Actor = "x"
	v := NewVerifier()
	_ = v.Add(es[0])
	first := v.Add(es[1])
	if first == nil {
		t.Fatal("edit not detected")
	}
	if err := v.Add(es[2]); !errors.Is(err, first) {
		t.Errorf("later Add: %v", err)
	}
	if err := v.Finish(); !errors.Is(err, first) {
		t.Errorf("Finish: %v", err)
	}
}

func TestVerifySeqReadError(t *testing.T) {
	es := chain(3)
	boom := errors.New("connection reset")
	seq := func(yield func(Entry, error) bool) {
		if !yield(es[0], nil) {
			return
		}
		yield(Entry{}, boom)
	}
	head, err := VerifySeq(Head{}, seq)
	if !errors.Is(err, boom) || errors.Is(err, ErrTampered) || head.Seq != 1 {
		t.Fatalf("got %+v, %v", head, err)
	}
}

func TestHashUnambiguous(t *testing.T) {
	a := Entry{Seq: 1, Time: t0, Actor: "ab", Action: "c"}
	b := Entry{Seq: 1, Time: t0, Actor: "a", Action: "bc"}
	if ComputeHash(a) == ComputeHash(b) {
		t.Fatal(`("ab","c") and ("a","bc") hash alike`)
	}
	c := Entry{Seq: 1, Time: t0, Reason: "a", Details: json.RawMessage(`{}`)}
	d := Entry{Seq: 1, Time: t0, Reason: "a{}"}
	if ComputeHash(c) == ComputeHash(d) {
		t.Fatal("bytes moved between reason and details hash alike")
	}
	if ComputeHash(Entry{Seq: 1, Details: json.RawMessage{}}) != ComputeHash(Entry{Seq: 1}) {
		t.Fatal("empty and nil details hash differently")
	}
	e := Entry{Seq: 1, Time: t0, Reason: "x"}
	f := Entry{Seq: 1, Time: t0, Target: "x"}
	if ComputeHash(e) == ComputeHash(f) {
		t.Fatal("a value moved to another field hashes alike")
	}
}

// The encoding is pinned (it is what every stored hash was made with); the value was also
// computed independently from the documented encoding.
func TestHashPinned(t *testing.T) {
	e := Entry{Seq: 7, Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Actor: "u-1", Action: ActionJobApproved,
		JobID: "job-1", Target: "holder-1", Reason: "ok", Details: json.RawMessage(`{"b":"2","a":1}`), PrevHash: GenesisHash}
	const want = "4e40387e850dfde0f064586c8bdda9688765fe86206c7abecb1da177e92337a7"
	if got := ComputeHash(e); got != want {
		t.Fatalf("audit hash encoding changed: %s", got)
	}
}

func TestValidate(t *testing.T) {
	ok := Entry{Time: t0, Actor: "u-1", Action: ActionJobCreated}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mod  func(e *Entry)
		want string
	}{
		{"no actor", func(e *Entry) { e.Actor = "" }, "actor is empty"},
		{"no time", func(e *Entry) { e.Time = time.Time{} }, "time is not set"},
		{"bad action", func(e *Entry) { e.Action = "Created" }, `action "Created" is not of the form noun.verb`},
		{"unknown action", func(e *Entry) { e.Action = "job.teleported" }, `"job.teleported" is not a known action`},
		{"NUL", func(e *Entry) { e.Reason = "a\x00b" }, "reason holds invalid UTF-8 or a NUL byte"},
		{"bad UTF-8", func(e *Entry) { e.Target = "\xff" }, "target holds invalid UTF-8"},
		{"details not JSON", func(e *Entry) { e.Details = json.RawMessage(`{"k":`) }, "details is not a JSON object"},
		{"details an array", func(e *Entry) { e.Details = json.RawMessage(`["k"]`) }, "details is not a JSON object"},
		{"details a string", func(e *Entry) { e.Details = json.RawMessage(`"k"`) }, "details is not a JSON object"},
	}
	for _, tt := range tests {
		e := ok
		tt.mod(&e)
		err := e.Validate()
		if !errors.Is(err, ErrInvalidEntry) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestSeal(t *testing.T) {
	first, err := Seal(nil, Entry{Time: t0, Actor: "u-1", Action: ActionJobCreated, JobID: "job-1", Details: json.RawMessage(`{"profile": "smartcard-logon"}`)})
	if err != nil {
		t.Fatal(err)
	}
	second, err := Seal(&first, Entry{Time: t0, Actor: "u-2", Action: ActionJobApproved, JobID: "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify([]Entry{first, second}); err != nil {
		t.Fatal(err)
	}
	if _, err := Seal(&second, Entry{Time: t0, Action: ActionJobApproved}); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("entry without actor sealed: %v", err)
	}
	if _, err := Seal(&Entry{Seq: 0, Hash: "x"}, Entry{Time: t0, Actor: "u", Action: ActionJobApproved}); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("chained after a malformed entry: %v", err)
	}
}

func TestDetails(t *testing.T) {
	if got := string(Details("holder", "h1", "empty", "", "code", 4, "ok", true)); got != `{"code":4,"holder":"h1","ok":true}` {
		t.Errorf("Details = %s", got)
	}
	if got := Details("empty", ""); got != nil {
		t.Errorf("Details of only empty values = %s, want nil", got)
	}
}
