// Package pkcs11 does every PKCS#11 token operation the workstation agent needs, on any
// module given by path (OpenSC, ykcs11, vendor modules; SoftHSM2 in tests), through
// github.com/miekg/pkcs11:
//
//   - load a module (Open) and list its slots and tokens with their decoded flags
//     (Module.Slots: poll it to see tokens come and go);
//   - select a token by PKCS#11 URI, RFC 7512 (Module.FindToken with a uri.URI; a serial
//     or label is &uri.URI{Serial: s} or &uri.URI{Token: l});
//   - initialise a token, refusing to wipe one unless told to (Module.InitToken,
//     Token.Init), set, change and reset PINs (InitUserPIN, ChangeUserPIN, ChangeSOPIN),
//     log in and out;
//   - check what the token can do (Mechanisms, CheckKeySpec), generate a key pair on it
//     or import an escrowed one (GenerateKey, ImportKey), and use it as a crypto.Signer
//     (x509.CreateCertificateRequest takes it) and crypto.Decrypter (Key);
//   - write a certificate and its chain (WriteCertificate), list, read and delete keys
//     and certificates (Keys, Key, DeleteKey, Certificates, Certificate,
//     DeleteCertificate), and check a key and its certificate belong together
//     (VerifyKeyAndCertificate).
//
// Decisions:
//
//   - Tokens are followed by serial number, never by a stored slot ID: slot IDs change
//     between processes and as readers come and go.
//   - C_Initialize acts on the whole process, so Modules opened on the same library file
//     share it, and the last Close calls C_Finalize. A file is known by its resolved path
//     and identity, not by the path configured: a symbolic or hard link to a loaded
//     library is the same library (the dynamic loader loads it once).
//   - One read/write session per Token, one call at a time per token, whichever Token
//     handles and Modules of the process it goes through: a token does one operation at
//     a time anyway, SoftHSM2 corrupts a token's private objects when two of its sessions
//     work at once, login state lives as long as the session, and a call waiting its turn
//     honours its context (key generation on a real token takes minutes). A session that
//     dies (token pulled out) or wedges is replaced on the next call; the user then logs
//     in again.
//   - A C_InitToken that fails with a device error is tried again after reloading the
//     module (C_Finalize, C_Initialize), a few times: SoftHSM2 reads a token's objects
//     once, and an object a killed process left half-written (its file without its lock
//     file) makes every C_InitToken of the process fail until it reads them again. The
//     reload waits for the calls in flight and holds new ones back, each side giving up
//     when its context ends; it ends every session of the library once C_Finalize
//     succeeds, and Tokens the user was logged in through log in again, so other tokens'
//     work goes on. A module whose C_Initialize fails after the reload stays down, and
//     each call tries C_Initialize again before it goes on.
//   - What the agent repeats after a crash or a redelivered job is idempotent by CKA_ID:
//     GenerateKey and ImportKey return the key already under the ID and clear a half-made
//     one; WriteCertificate leaves an identical certificate alone and finishes a
//     replacement cut short. Key and certificate share the ID; the caller derives it from
//     the job.
//   - Private keys are token objects, private, sensitive and never extractable; every
//     usage attribute is set explicitly, since modules' defaults differ.
//   - Errors are *Error with a stable Code the wire protocol reuses, the operation, the
//     token's label and serial, the PKCS#11 return value (the module's pkcs11.Error is
//     wrapped) and, after a PIN error, the PIN's retry state. PINs never appear in errors
//     or logs; a PIN of a length the token cannot take is refused before it costs a try.
//   - The module is reached through Backend, just the calls this package makes: the
//     faults package wraps it to test what SoftHSM2 cannot show (PIN lockout, tokens
//     pulled out mid-operation, failing calls).
//   - Without cgo the package still builds: Open fails with CodeModuleLoadFailed.
//
// Not done: PIN pads (CKF_PROTECTED_AUTHENTICATION_PATH is reported, but Login always
// sends the PIN), keys that need a login per signature (CKA_ALWAYS_AUTHENTICATE), curves
// other than P-256, P-384 and P-521, EdDSA, and C_WaitForSlotEvent (unreliable across
// modules: poll Slots).
package pkcs11
