// Package ca is the coordinator's interface to certificate authorities: a CA signs the
// certificates the registration authority (package ra) asked for, revokes them, and hands
// relying parties its chain.
//
// Back ends are chosen by type name from a registry (Register, New). The built-in issuing
// CA (package ca/builtin, type "builtin") registers itself when imported; external CAs
// add their own types. A back end may offer more through one-method interfaces found by
// type assertion: CRLSource for a CA whose CRL the coordinator publishes itself.
//
// The certificate's subject and subject alternative names come from the approved request
// (SignRequest.Identity), never from the CSR: the RA has already checked the CSR's
// signature and key and keeps only its public key.
package ca
