package brokeradmin

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestSaltedHash: RabbitMQ's rabbit_password_hashing_sha256 of a known salt and password
// (computed independently), and a fresh salt per hash.
func TestSaltedHash(t *testing.T) {
	t.Parallel()
	got := saltedHash([]byte{0x90, 0x8d, 0xc6, 0x0a}, "pässwörd-of-agent")
	if want := "kI3GCrgRcm1u3P6zb8PMJGz5YhE4YXTfwNZ8hR4+DQiii6hr"; got != want {
		t.Errorf("hash %s, want %s", got, want)
	}
	if a, b := passwordHash("x"), passwordHash("x"); a == b {
		t.Error("two hashes of one password share their salt")
	}
}

// TestAPIPath: a vhost "/" and names with spaces and slashes become single segments.
func TestAPIPath(t *testing.T) {
	t.Parallel()
	if got, want := apiPath("permissions", "/", "agent-ws 1/x"), "/permissions/%2F/agent-ws%201%2Fx"; got != want {
		t.Errorf("path %s, want %s", got, want)
	}
}

// TestAPIError: RabbitMQ's error and reason are kept (a reason may be a list), a
// proxy's page is cut short, and 401 and 404 match their sentinels.
func TestAPIError(t *testing.T) {
	t.Parallel()
	e := apiError("POST", "/users/bulk-delete", 400, []byte(`{"error":"bad_request","reason":["no_such_user","x"]}`))
	if e.Code != "bad_request" || e.Reason != `["no_such_user","x"]` {
		t.Errorf("%+v", e)
	}
	e = apiError("GET", "/whoami", 502, []byte("<html>"+strings.Repeat("é", 300)+"</html>"))
	if len(e.Reason) > 210 || !strings.HasPrefix(e.Reason, "<html>") || !strings.Contains(e.Error(), "HTTP 502 Bad Gateway") {
		t.Errorf("%q", e.Error())
	}
	for status, want := range map[int]error{http.StatusUnauthorized: ErrUnauthorized, http.StatusNotFound: ErrNotFound} {
		e := apiError("GET", "/x", status, []byte(`{"error":"e","reason":"r"}`))
		other := ErrUnauthorized
		if errors.Is(want, ErrUnauthorized) {
			other = ErrNotFound
		}
		if !errors.Is(e, want) || errors.Is(e, other) {
			t.Errorf("%d: Is(%v) wrong", status, want)
		}
	}
}

// TestCleanReason: what a client is told fits a header and an AMQP short string.
func TestCleanReason(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                    defaultReason,
		"  revoked  ":         "revoked",
		"line\nbreak":         "line?break",
		"vol de l'ordinateur": "vol de l'ordinateur",
		"évincé":              "?vinc?",
	} {
		if got := cleanReason(in); got != want {
			t.Errorf("cleanReason(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cleanReason(strings.Repeat("x", 500)); len(got) != maxReasonLen {
		t.Errorf("a long reason kept %d bytes", len(got))
	}
}
