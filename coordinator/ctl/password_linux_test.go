package ctl_test

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
)

// TestUserPasswordNoEcho: on a real terminal the password typed is not echoed, and the
// echo is back once the command is done.
func TestUserPasswordNoEcho(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	var body string
	api.routes["PUT /api/v1/users/ann/password"] = func(w http.ResponseWriter, r *http.Request) {
		b := new(bytes.Buffer)
		_, _ = b.ReadFrom(r.Body)
		body = b.String()
		w.WriteHeader(http.StatusNoContent)
	}
	typist, term := openPTY(t)
	done := make(chan result, 1)
	go func() { done <- runWith(api.env(), ctl.Env{Stdin: term}, "user", "password", "ann") }()

	// Type only once the echo is off, as a person does after the prompt.
	echo := func() bool {
		tio, err := unix.IoctlGetTermios(int(term.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		return tio.Lflag&unix.ECHO != 0
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for echo() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the terminal's echo was never turned off")
		}
	}
	if _, err := typist.WriteString("unseen passphrase\nunseen passphrase\n"); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not finish")
	}
	if r.code != 0 || body != `{"password":"unseen passphrase"}`+"\n" && body != `{"password":"unseen passphrase"}` {
		t.Fatalf("exit %d, stderr %q, sent %q", r.code, r.stderr, body)
	}
	if !echo() {
		t.Fatal("the echo was left off")
	}
	// What the terminal showed: the marker typed after, echoed, and not the password.
	if _, err := typist.WriteString("marker\n"); err != nil {
		t.Fatal(err)
	}
	if err := typist.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var shown []byte
	buf := make([]byte, 256)
	for !bytes.Contains(shown, []byte("marker")) {
		n, err := typist.Read(buf)
		shown = append(shown, buf[:n]...)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the marker was not echoed; the terminal showed %q", shown)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(string(shown), "unseen") {
		t.Fatalf("the password was echoed: %q", shown)
	}
}
