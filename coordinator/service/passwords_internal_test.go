package service

import (
	"strings"
	"testing"
	"time"
)

func TestPasswordHashFormat(t *testing.T) {
	t.Parallel()
	p := PasswordParams{Memory: 1024, Time: 1, Threads: 1}
	h := hashPassword("correct horse battery staple", p)
	if !strings.HasPrefix(h, "$argon2id$v=19$m=1024,t=1,p=1$") || strings.Count(h, "$") != 5 {
		t.Fatalf("encoded %q", h)
	}
	if h2 := hashPassword("correct horse battery staple", p); h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, c := range []struct {
		pw         string
		cur        PasswordParams
		ok, rehash bool
	}{
		{"correct horse battery staple", p, true, false},
		{"correct horse battery stapl", p, false, false},
		{"correct horse battery staple", DefaultPasswordParams, true, true},
		{"correct horse battery staple", PasswordParams{Memory: 1024, Time: 2, Threads: 1}, true, true},
	} {
		ok, rehash, err := verifyPassword(h, c.pw, c.cur)
		if err != nil || ok != c.ok || rehash != c.rehash {
			t.Errorf("verify %q with %+v: %v, %v, %v", c.pw, c.cur, ok, rehash, err)
		}
	}
	// Hashes that are not ours, or tampered with to cost the coordinator its memory, are
	// refused without hashing.
	for _, bad := range []string{
		"", "plain", "$2y$10$abcdefghijklmnopqrstuv", "$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=16$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1024,t=1000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1024,t=1,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1024,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
	} {
		if ok, _, err := verifyPassword(bad, "x", p); err == nil || ok {
			t.Errorf("verify against %q: %v, %v", bad, ok, err)
		}
	}
}

func TestLockBackoff(t *testing.T) {
	t.Parallel()
	o := SignInOptions{LockoutFirst: time.Minute, LockoutMax: time.Hour}
	var got []time.Duration
	for i := range 9 {
		got = append(got, o.lockFor(i))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		if got[i] != want[i]*time.Minute {
			t.Fatalf("locks %v", got)
		}
	}
	if d := o.lockFor(1 << 20); d != time.Hour {
		t.Fatalf("after very many locks: %v", d)
	}
}
