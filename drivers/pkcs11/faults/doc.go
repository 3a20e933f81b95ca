// Package faults makes a real PKCS#11 module misbehave the way real tokens do and SoftHSM
// does not: PINs that lock after a few wrong tries, tokens pulled out mid-operation, calls
// that fail with a chosen CKR_ value, calls held up at a chosen moment. It wraps the
// module's calls through pkcs11.Options.Wrap; everything it does not change reaches the
// module as is. It needs cgo, like the module itself.
package faults
