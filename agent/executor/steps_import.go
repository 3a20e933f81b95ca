package executor

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// importsKey reports whether jobs of the kind import a key the coordinator made
// (server_keygen) or recovered (recover_key): on the agent the two are one job.
func importsKey(k protocol.JobKind) bool {
	return k == protocol.KindServerKeygen || k == protocol.KindRecoverKey
}

// escrowedKey opens the dispatch's sealed private key and checks it is the key of the
// dispatch's certificate, of the dispatch's key type: all before the token is touched, so
// a key that is not the job's costs no PIN try and leaves nothing on the token. The
// caller wipes the key (wipeKey) once it is on the token.
func (r *run) escrowedKey() (crypto.Signer, *x509.Certificate, error) {
	leaf, _, err := parseChain(r.d.Certificates)
	if err != nil {
		return nil, nil, err
	}
	kt, err := protocol.KeyTypeOf(leaf.PublicKey)
	if err != nil {
		return nil, nil, protocol.NewError(protocol.CodeKeyMismatch, "the certificate %q holds a key no profile allows: %v", leaf.Subject, err)
	}
	if kt != r.d.Key.Type {
		return nil, nil, protocol.NewError(protocol.CodeKeyMismatch, "the certificate %q holds a %s key, the dispatch's key.type is %s", leaf.Subject, kt, r.d.Key.Type)
	}
	der, err := r.e.cfg.Keys.Open(r.d.PrivateKey, sealBinding(r.job.Ref, protocol.PurposePrivateKey))
	if err != nil {
		return nil, nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, nil, protocol.NewError(protocol.CodeBadRequest, "private_key: not a PKCS#8 private key: %v", err)
	}
	var key crypto.Signer
	switch k := parsed.(type) {
	case *rsa.PrivateKey:
		key = k
	case *ecdsa.PrivateKey:
		key = k
	default:
		return nil, nil, protocol.NewError(protocol.CodeBadRequest, "private_key: a %T; tokens take RSA or EC keys", parsed)
	}
	if !publicEqual(key.Public(), leaf.PublicKey) {
		wipeKey(key)
		return nil, nil, protocol.NewError(protocol.CodeKeyMismatch,
			"the sealed private key is not the key of the certificate %q (serial %x); refusing to import it", leaf.Subject, leaf.SerialNumber)
	}
	return key, leaf, nil
}

// importKey puts the escrowed key on the token under the job's CKA_ID: private, sensitive,
// never extractable, for decryption only (RSA: decrypt and unwrap; EC: derive), with its
// public key object as generateKey leaves one. The token marks it not local (CKA_LOCAL
// false): it was made elsewhere. A key already there with the ID and this public key (an
// interrupted pass, an earlier attempt) is kept, not imported twice; another key under
// the ID is token.key_exists.
func (r *run) importKey(ctx context.Context, _ bool) error {
	key, leaf, err := r.escrowedKey()
	if err != nil {
		return err
	}
	defer wipeKey(key)
	if err := r.begin(ctx, stepImportKey, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	onToken, created, err := r.tok.ImportKey(ctx, pkcs11.ImportRequest{ID: r.keyID, Label: r.keyLabel(), Key: key, Usage: pkcs11.UsageDecrypt})
	if err != nil {
		return err
	}
	wipeKey(key)
	pub, err := x509.MarshalPKIXPublicKey(onToken.Public())
	if err != nil {
		return fmt.Errorf("encode the public key: %w", err)
	}
	detail := fmt.Sprintf("%s key for %q imported onto the token", r.d.Key.Type, leaf.Subject.CommonName)
	if !created {
		detail = fmt.Sprintf("%s key for %q found on the token, imported by an earlier attempt", r.d.Key.Type, leaf.Subject.CommonName)
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepKeyImported, Detail: detail})
	if err != nil {
		return err
	}
	c.KeyID, c.PublicKey, c.TokenSerial = r.d.Key.ID, pub, r.serial
	r.log.Info().Str("key_id", r.d.Key.ID).Bool("created", created).Msg("escrowed key on the token")
	return r.done(ctx, stepImportKey, c)
}

// wipeKey overwrites the private parts of a key in memory once they are on the token
// (or refused). Best effort: the big integers are zeroed in place, but the standard
// library's precomputed forms and the copies cgo made for the module are out of reach.
func wipeKey(key crypto.Signer) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		clear(k.D.Bits())
		for _, p := range k.Primes {
			clear(p.Bits())
		}
		for _, v := range []*big.Int{k.Precomputed.Dp, k.Precomputed.Dq, k.Precomputed.Qinv} {
			if v != nil {
				clear(v.Bits())
			}
		}
	case *ecdsa.PrivateKey:
		clear(k.D.Bits()) //nolint:staticcheck // the raw scalar is what must go; the key is not used again
	}
}

// readCertificate (register_certificate) reads the certificate under the dispatch's key
// ID and ends the job with it. Certificates are public objects: no login, and the
// dispatch carries no PIN.
func (r *run) readCertificate(ctx context.Context, _ bool) error {
	if err := r.begin(ctx, stepReadCert, journal.Change{}); err != nil {
		return err
	}
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	cert, err := tok.Certificate(ctx, r.keyID)
	if isCode(err, pkcs11.CodeCertificateNotFound) {
		hint := ""
		if r.slot.Token != nil && r.slot.Token.LoginRequired {
			hint = "; this token may show its certificates only after a login, which register_certificate does not do (it carries no PIN)"
		}
		return protocol.NewError(protocol.CodeTokenCertificateNotFound, "no certificate with ID %s on token %s%s", r.d.Key.ID, r.serial, hint)
	}
	if err != nil {
		return err
	}
	if len(cert.DER) > protocol.MaxCertificateSize {
		return protocol.NewError(protocol.CodeTooLarge, "the certificate with ID %s is %d bytes, more than the %d a result may carry",
			r.d.Key.ID, len(cert.DER), protocol.MaxCertificateSize)
	}
	serial := hex.EncodeToString(cert.Cert.SerialNumber.Bytes())
	o := r.outputs()
	if o == nil {
		o = &protocol.Outputs{TokenSerial: r.serial}
	}
	o.KeyID, o.CertificateSerial, o.Certificate = r.d.Key.ID, serial, cert.DER
	res, err := r.message(protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: o})
	if err != nil {
		return err
	}
	r.log.Info().Str("key_id", r.d.Key.ID).Str("serial", serial).Str("subject", cert.Subject).Msg("certificate read for registration")
	return r.done(ctx, stepReadCert, journal.Change{TokenSerial: r.serial, State: journal.StateDone, Result: res})
}

func publicEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
