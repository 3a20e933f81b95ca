package oidc

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// FlowTTL is how long a person has between Start and the callback. The console's flow
// cookie should not outlive it.
const FlowTTL = 10 * time.Minute

// randomLen is the length of state, nonce and verifier: 32 random bytes, base64url
// without padding.
const randomLen = 43

// Flow is one sign-in in progress, kept by the browser (the console's short-lived
// cookie) between Start and Finish. It is not secret in a way that matters after the
// callback: the state travelled in the URL, the nonce comes back inside the ID token, and
// the verifier only proves possession of a code that the token endpoint accepts once.
// Before the callback it must stay with this browser only (HttpOnly, Secure, SameSite=Lax).
type Flow struct {
	State    string    `json:"s"`
	Nonce    string    `json:"n"`
	Verifier string    `json:"v"`
	Expires  time.Time `json:"e"`
}

// Encode gives the flow as one cookie-safe token (base64url of its JSON).
func (f Flow) Encode() string {
	b, err := json.Marshal(f)
	if err != nil {
		// A struct of strings and a time always marshals.
		panic(fmt.Sprintf("oidc: encode flow: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeFlow reads what Encode wrote. A missing, altered or foreign value is
// ErrFlowExpired: to the person, the sign-in was not started here, or too long ago.
func DecodeFlow(s string) (Flow, error) {
	if s == "" {
		return Flow{}, fmt.Errorf("%w: no sign-in in progress in this browser", ErrFlowExpired)
	}
	if len(s) > 512 {
		return Flow{}, fmt.Errorf("%w: the sign-in cookie is too long", ErrFlowExpired)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Flow{}, fmt.Errorf("%w: the sign-in cookie is not readable", ErrFlowExpired)
	}
	var f Flow
	if err := json.Unmarshal(b, &f); err != nil {
		return Flow{}, fmt.Errorf("%w: the sign-in cookie is not readable", ErrFlowExpired)
	}
	if err := f.wellFormed(); err != nil {
		return Flow{}, err
	}
	return f, nil
}

// wellFormed checks the shape of a flow (not its age).
func (f Flow) wellFormed() error {
	for _, v := range []string{f.State, f.Nonce, f.Verifier} {
		if !isRandomToken(v) {
			return fmt.Errorf("%w: the sign-in cookie is not one this coordinator made", ErrFlowExpired)
		}
	}
	if f.Expires.IsZero() {
		return fmt.Errorf("%w: the sign-in cookie has no expiry", ErrFlowExpired)
	}
	return nil
}

func isRandomToken(s string) bool {
	if len(s) != randomLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// randomToken is 32 bytes from crypto/rand, base64url without padding.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}
