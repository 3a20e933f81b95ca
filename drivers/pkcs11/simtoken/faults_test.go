//go:build cgo

package simtoken_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
)

// The user PIN locks after the model's tries, the token says so at each step, and the SO
// unblocks it; the SO PIN has its own counter.
func TestPINLockout(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, simtoken.Options{})
	addToken(t, b, simtoken.TokenSpec{Serial: "SIM0001", SOPIN: soPIN, Label: "alice", UserPIN: userPIN})
	tok := findToken(t, open(t, b), "SIM0001")

	for i, s := range []struct {
		code pkcs11.Code
		pin  pkcs11.PINStatus
	}{
		{pkcs11.CodePINIncorrect, pkcs11.PINStatus{CountLow: true}},
		{pkcs11.CodePINIncorrect, pkcs11.PINStatus{CountLow: true, FinalTry: true}},
		{pkcs11.CodePINLocked, pkcs11.PINStatus{Locked: true}},
	} {
		err := tok.Login(ctx, "00000000")
		wantCode(t, err, s.code)
		var e *pkcs11.Error
		if !errors.As(err, &e) || e.PIN == nil || *e.PIN != s.pin {
			t.Fatalf("wrong PIN #%d: PIN status %+v, want %+v", i+1, e.PIN, s.pin)
		}
	}
	err := tok.Login(ctx, userPIN)
	wantCode(t, err, pkcs11.CodePINLocked)
	if !errors.Is(err, pkcs11.ErrPINLocked) || pkcs11.Retryable(err) {
		t.Error("a locked PIN must match ErrPINLocked and not be retryable")
	}
	wantCode(t, tok.ChangeUserPIN(ctx, userPIN, "13572468"), pkcs11.CodePINLocked)
	info, err := tok.Info(ctx)
	if err != nil || !info.UserPIN.Locked || info.SOPIN != (pkcs11.PINStatus{}) {
		t.Fatalf("token info after lockout: user %+v, SO %+v, %v", info.UserPIN, info.SOPIN, err)
	}

	// The unblock job: the SO sets a new user PIN.
	if err := tok.InitUserPIN(ctx, soPIN, "97531864"); err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(ctx, "97531864"); err != nil {
		t.Fatalf("login after the reset: %v", err)
	}
	if info, _ := tok.Info(ctx); info.UserPIN != (pkcs11.PINStatus{}) {
		t.Errorf("PIN status after the reset: %+v", info.UserPIN)
	}

	// The SO PIN: 3 tries as well, then even a wipe is refused.
	wantCode(t, tok.InitUserPIN(ctx, "00000000", userPIN), pkcs11.CodePINIncorrect)
	wantCode(t, tok.ChangeSOPIN(ctx, "00000000", "11111111"), pkcs11.CodePINIncorrect)
	wantCode(t, tok.InitUserPIN(ctx, "00000000", userPIN), pkcs11.CodePINLocked)
	_, err = tok.Init(ctx, pkcs11.InitOptions{Label: "alice", SOPIN: soPIN, Force: true})
	wantCode(t, err, pkcs11.CodePINLocked)
	// A PIN of a length the token cannot take costs no try.
	wantCode(t, tok.Login(ctx, "123"), pkcs11.CodePINLenRange)
	if err := tok.Login(ctx, "97531864"); err != nil {
		t.Fatalf("the user PIN has a counter of its own: %v", err)
	}
}

// A token pulled out mid-session: the driver reports the removal, then that the token is
// not there, and after it is put back it works again, logged out.
func TestRemovalMidSession(t *testing.T) {
	ctx := context.Background()
	b, mod, tok := ready(t, simtoken.Options{})
	key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{7}, Label: "k", Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))

	if err := b.Remove("SIM0001"); err != nil {
		t.Fatal(err)
	}
	_, err = key.SignContext(ctx, digest[:], nil)
	wantCode(t, err, pkcs11.CodeDeviceRemoved)
	if !pkcs11.Retryable(err) {
		t.Error("a removal must be retryable")
	}
	_, err = key.SignContext(ctx, digest[:], nil)
	wantCode(t, err, pkcs11.CodeNotPresent)
	slots, err := mod.Slots(ctx)
	if err != nil || len(slots) != 1 || slots[0].TokenPresent || slots[0].Token != nil {
		t.Fatalf("slots with the token out: %+v, %v", slots, err)
	}

	if err := b.Insert("SIM0001"); err != nil {
		t.Fatal(err)
	}
	_, err = key.SignContext(ctx, digest[:], nil)
	wantCode(t, err, pkcs11.CodeNotLoggedIn)
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	if _, err := key.SignContext(ctx, digest[:], nil); err != nil {
		t.Fatalf("sign after the token came back: %v", err)
	}
}

// What a real module answers on a session of a pulled token: CKR_DEVICE_REMOVED while it
// is out, CKR_SESSION_HANDLE_INVALID once it is back.
func TestRemovalOnTheWire(t *testing.T) {
	b := newBackend(t, simtoken.Options{})
	slot := addToken(t, b, simtoken.TokenSpec{Serial: "SIM0001", SOPIN: soPIN, Label: "a", UserPIN: userPIN})
	sh, err := b.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Login(sh, p11.CKU_USER, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove("SIM0001"); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"Login":           func() error { return b.Login(sh, p11.CKU_USER, userPIN) },
		"FindObjectsInit": func() error { return b.FindObjectsInit(sh, nil) },
		"GetSessionInfo":  func() error { _, err := b.GetSessionInfo(sh); return err },
	} {
		if rv := rvOf(call()); rv != p11.CKR_DEVICE_REMOVED {
			t.Errorf("%s with the token out: 0x%x, want CKR_DEVICE_REMOVED", name, rv)
		}
	}
	if _, err := b.GetTokenInfo(slot); rvOf(err) != p11.CKR_TOKEN_NOT_PRESENT {
		t.Errorf("GetTokenInfo with the token out: %v", err)
	}
	if _, err := b.OpenSession(slot, p11.CKF_SERIAL_SESSION); rvOf(err) != p11.CKR_TOKEN_NOT_PRESENT {
		t.Errorf("OpenSession with the token out: %v", err)
	}
	if ids, err := b.GetSlotList(true); err != nil || len(ids) != 0 {
		t.Errorf("slots with a token: %v, %v", ids, err)
	}
	if ids, err := b.GetSlotList(false); err != nil || len(ids) != 1 {
		t.Errorf("slots: %v, %v", ids, err)
	}
	if err := b.Insert("SIM0001"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetSessionInfo(sh); rvOf(err) != p11.CKR_SESSION_HANDLE_INVALID {
		t.Errorf("old session after re-insertion: %v, want CKR_SESSION_HANDLE_INVALID", err)
	}
	sh2, err := b.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	si, err := b.GetSessionInfo(sh2)
	if err != nil || si.State != p11.CKS_RW_PUBLIC_SESSION {
		t.Errorf("new session: %+v, %v; want logged out", si, err)
	}
	if err := b.Remove("NOSUCH"); err == nil {
		t.Error("Remove of an unknown serial succeeded")
	}
}

// An injected failure gives the driver code of its CKR_ value, at the chosen rate.
func TestInjectedFailures(t *testing.T) {
	ctx := context.Background()
	for rv, code := range map[uint]pkcs11.Code{
		p11.CKR_DEVICE_ERROR:      pkcs11.CodeDeviceError,
		p11.CKR_FUNCTION_FAILED:   pkcs11.CodeDeviceError,
		p11.CKR_DEVICE_MEMORY:     pkcs11.CodeMemoryFull,
		p11.CKR_TOKEN_NOT_PRESENT: pkcs11.CodeNotPresent,
		p11.CKR_DEVICE_REMOVED:    pkcs11.CodeDeviceRemoved,
		p11.CKR_PIN_EXPIRED:       pkcs11.CodePINExpired,
		p11.CKR_GENERAL_ERROR:     pkcs11.CodeGeneralError,
	} {
		t.Run(fmt.Sprintf("0x%x", rv), func(t *testing.T) {
			_, _, tok := ready(t, simtoken.Options{Faults: map[simtoken.Op]simtoken.Fault{simtoken.OpKeygenEC: {Rate: 1, RV: rv}}})
			_, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
			wantCode(t, err, code)
			var e *pkcs11.Error
			if !errors.As(err, &e) || e.RV != rv {
				t.Fatalf("error %v: want RV 0x%x", err, rv)
			}
		})
	}

	t.Run("rate", func(t *testing.T) {
		const n, rate = 400, 0.25
		var heard int // OnFault runs on the calling goroutine, outside the backend's locks
		_, _, tok := ready(t, simtoken.Options{Seed: 42,
			Faults: map[simtoken.Op]simtoken.Fault{simtoken.OpSignEC: {Rate: rate, RV: p11.CKR_DEVICE_ERROR}},
			OnFault: func(serial string, op simtoken.Op, rv uint) {
				if serial == "" || op != simtoken.OpSignEC || rv != p11.CKR_DEVICE_ERROR {
					t.Errorf("OnFault(%q, %s, 0x%x): want the token's serial, sign_ec, CKR_DEVICE_ERROR", serial, op, rv)
				}
				heard++
			}})
		key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
		if err != nil {
			t.Fatal(err)
		}
		failed := 0
		digest := sha256.Sum256([]byte("x"))
		for range n {
			_, err := key.SignContext(ctx, digest[:], nil)
			switch pkcs11.CodeOf(err) {
			case "":
			case pkcs11.CodeDeviceError:
				failed++
			default:
				t.Fatalf("sign: %v", err)
			}
		}
		// 400 draws at 25%: the standard deviation is ~8.7, so 60 to 140 is over 4 of them.
		if failed < 60 || failed > 140 {
			t.Fatalf("%d of %d signatures failed, want about %d", failed, n, int(n*rate))
		}
		if heard != failed {
			t.Errorf("OnFault heard %d injected failures, %d signatures failed", heard, failed)
		}
	})
}

// A removal drawn by a fault empties the slot; the token comes back after the drawn time
// on the backend's clock, logged out.
func TestFaultRemovalAndReinsertion(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	b, mod, tok := ready(t, simtoken.Options{Now: clock.Now, Sleeper: clock,
		Faults:   map[simtoken.Op]simtoken.Fault{simtoken.OpKeygenRSA: {Rate: 1, RV: p11.CKR_DEVICE_REMOVED}},
		Reinsert: simtoken.Dist{Median: time.Minute}})
	_, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048}})
	wantCode(t, err, pkcs11.CodeDeviceRemoved)
	slots, err := mod.Slots(ctx)
	if err != nil || len(slots) != 1 || slots[0].TokenPresent {
		t.Fatalf("slots after the removal: %+v, %v", slots, err)
	}
	clock.Advance(59 * time.Second)
	wantCode(t, tok.Login(ctx, userPIN), pkcs11.CodeNotPresent)
	clock.Advance(time.Second)
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatalf("login once the token is back: %v", err)
	}
	if keys, err := tok.Keys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("keys after the interrupted generation: %+v, %v", keys, err)
	}
	if _, err := b.GetSlotList(true); err != nil {
		t.Fatal(err)
	}
}

// The same seed and the same calls give the same failures and latencies, whatever else
// runs; another seed gives others.
func TestReplayable(t *testing.T) {
	run := func(seed uint64) string {
		clock := newFakeClock()
		var trace []string
		opts := simtoken.Options{Seed: seed, Now: clock.Now, Sleeper: clock, Profile: simtoken.Smartcard,
			Faults: map[simtoken.Op]simtoken.Fault{simtoken.OpSignEC: {Rate: 0.3, RV: p11.CKR_DEVICE_ERROR}},
			OnSpend: func(serial string, op simtoken.Op, d time.Duration) {
				if op == simtoken.OpSignEC {
					trace = append(trace, d.String())
				}
			}}
		_, _, tok := ready(t, opts)
		ctx := context.Background()
		key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte("x"))
		for range 20 {
			_, err := key.SignContext(ctx, digest[:], nil)
			trace = append(trace, string(pkcs11.CodeOf(err)))
		}
		return fmt.Sprint(trace)
	}
	a, b, c := run(7), run(7), run(8)
	if a != b {
		t.Fatalf("seed 7 twice:\n%s\n%s", a, b)
	}
	if a == c {
		t.Fatalf("seeds 7 and 8 gave the same run: %s", a)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	for name, opts := range map[string]simtoken.Options{
		"unknown op":  {Faults: map[simtoken.Op]simtoken.Fault{"teleport": {Rate: 1, RV: p11.CKR_DEVICE_ERROR}}},
		"rate":        {Faults: map[simtoken.Op]simtoken.Fault{simtoken.OpSignEC: {Rate: 2, RV: p11.CKR_DEVICE_ERROR}}},
		"no RV":       {Faults: map[simtoken.Op]simtoken.Fault{simtoken.OpSignEC: {Rate: 1}}},
		"p95":         {Profile: simtoken.Profile{Name: "x", Ops: map[simtoken.Op]simtoken.Dist{simtoken.OpLogin: {Median: 2, P95: 1}}}},
		"profile op":  {Profile: simtoken.Profile{Name: "x", Ops: map[simtoken.Op]simtoken.Dist{"warp": {Median: 1}}}},
		"reinsertion": {Reinsert: simtoken.Dist{Median: -1}},
	} {
		if _, err := simtoken.New(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	b := newBackend(t, simtoken.Options{})
	for name, spec := range map[string]simtoken.TokenSpec{
		"no serial":   {},
		"long serial": {Serial: "12345678901234567"},
		"blank label": {Serial: "A", Label: "x"},
		"bad model":   {Serial: "B", Model: &simtoken.Model{Model: "m", MinPINLen: 8, MaxPINLen: 4, UserPINTries: 3, SOTries: 3}},
	} {
		if _, err := b.AddToken(spec); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	addToken(t, b, simtoken.TokenSpec{Serial: "C"})
	if _, err := b.AddToken(simtoken.TokenSpec{Serial: "C"}); err == nil {
		t.Error("a second token with one serial was accepted")
	}
	if _, err := simtoken.ProfileByName("floppy"); err == nil {
		t.Error("unknown profile accepted")
	}
}

// RVFor gives, for each code a module's answer can give, a CKR_ value that comes out of
// the driver as that code: how the simulator injects a failure of a chosen code.
func TestRVForGivesTheCode(t *testing.T) {
	ctx := context.Background()
	for _, code := range []pkcs11.Code{
		pkcs11.CodePINIncorrect, pkcs11.CodePINLocked, pkcs11.CodePINLenRange, pkcs11.CodePINInvalid,
		pkcs11.CodePINExpired, pkcs11.CodeNotPresent, pkcs11.CodeDeviceRemoved, pkcs11.CodeDeviceError,
		pkcs11.CodeNotInitialized, pkcs11.CodeNotLoggedIn, pkcs11.CodeFunctionNotSupported,
		pkcs11.CodeMechanismNotSupported, pkcs11.CodeWriteProtected, pkcs11.CodeMemoryFull,
		pkcs11.CodeSessionError, pkcs11.CodeGeneralError, pkcs11.CodeCancelled,
	} {
		rv, err := simtoken.RVFor(code)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range []simtoken.Op{simtoken.OpSignEC, simtoken.OpKeygenEC} {
			_, _, tok := ready(t, simtoken.Options{Faults: map[simtoken.Op]simtoken.Fault{op: {Rate: 1, RV: rv}}})
			key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
			if op == simtoken.OpSignEC {
				if err != nil {
					t.Fatal(err)
				}
				_, err = key.SignContext(ctx, make([]byte, 32), nil)
			}
			if got := pkcs11.CodeOf(err); got != code {
				t.Errorf("%s on %s: the driver says %q (%v)", code, op, got, err)
			}
		}
	}
	if _, err := simtoken.RVFor(pkcs11.CodeAmbiguous); err == nil {
		t.Error("RVFor(token.ambiguous) gave a value")
	}
}

// SetFaults changes the failures from the next operation on.
func TestSetFaults(t *testing.T) {
	ctx := context.Background()
	b, _, tok := ready(t, simtoken.Options{})
	spec := pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}
	if err := b.SetFaults(map[simtoken.Op]simtoken.Fault{simtoken.OpKeygenEC: {Rate: 1, RV: p11.CKR_DEVICE_ERROR}}); err != nil {
		t.Fatal(err)
	}
	_, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: spec})
	wantCode(t, err, pkcs11.CodeDeviceError)
	if err := b.SetFaults(nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: spec}); err != nil {
		t.Fatalf("without faults: %v", err)
	}
	if err := b.SetFaults(map[simtoken.Op]simtoken.Fault{simtoken.OpKeygenEC: {Rate: -1, RV: p11.CKR_DEVICE_ERROR}}); err == nil {
		t.Error("a negative rate was accepted")
	}
}
