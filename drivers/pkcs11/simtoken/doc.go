// Package simtoken is a simulated PKCS#11 module in memory: slots holding tokens, blank
// or initialised, with sessions, SO and user PINs that count wrong tries and lock,
// objects with attributes, key pairs made with Go's crypto (RSA 2048 to 4096 bits, EC
// P-256 and P-384), and the signatures and decryptions the driver asks for. It implements
// pkcs11.Backend, so pkcs11.OpenBackend runs the real driver, unchanged, on top of it: the
// fleet simulator runs thousands of real agents on simulated tokens in one process.
//
// What makes it a simulation rather than a test double:
//
//   - Latency profiles (Profile): a log-normal distribution per class of operation
//     (Op), built in for SoftHSM2, a smart card and a USB token, or instant. The time is
//     spent by a Sleeper (tests give a fake one), one operation at a time per token, as a
//     device does; the backend adds up, per token serial, the token time it spent
//     (TokenTime, Options.OnSpend), so a caller can tell its own latency from the token's.
//   - Injected failures (Options.Faults): per operation class, a rate of failure with a
//     chosen CKR_ value (RVFor gives the value for a driver code); CKR_DEVICE_REMOVED or
//     CKR_TOKEN_NOT_PRESENT pull the token out of its slot, for a drawn time
//     (Options.Reinsert) or until Insert. Remove and Insert do it by hand. Sessions on a
//     pulled token answer CKR_DEVICE_REMOVED while it is out and
//     CKR_SESSION_HANDLE_INVALID once it is back, logged out, as real modules do.
//   - Replayable: every draw comes from math/rand/v2 PCG sources seeded from
//     Options.Seed and the token's serial, so a token's latencies and failures depend on
//     its own sequence of calls only, not on how goroutines interleave.
//
// A token costs about 400 bytes blank and 3.6 KB holding a P-256 key and its certificate
// (BenchmarkTokenMemory); keys are made when asked for, never in advance. Private key
// material never leaves: its attributes answer CKR_ATTRIBUTE_SENSITIVE. Open one Backend
// per simulated workstation, or one for many; Modules over one Backend share it as
// Modules of one library file do (pkcs11.OpenBackend).
//
// Not simulated: CKM_RSA_PKCS_OAEP (miekg/pkcs11 hides its parameters from Go code, so
// such a decryption fails with CKR_MECHANISM_INVALID and the token does not list it),
// EdDSA and P-521, CKA_ALWAYS_AUTHENTICATE, PIN pads, C_WaitForSlotEvent. It needs cgo,
// like the pkcs11 package whose types it uses.
package simtoken
