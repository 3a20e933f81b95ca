// Package builtin is the coordinator's embedded issuing CA, registered as type
// "builtin" in package ca.
//
// On first start it creates a self-signed root CA in its data directory (key file mode
// 0600, certificate 0644); later starts load it from there. An existing CA (a root, or
// an intermediate under the organisation's own root) can be given instead as a
// certificate file and a key file. Certificates get a random 128-bit serial, the CA's
// key identifier and the configured CRL distribution point. Revocations go to a
// ca.RevocationStore that the coordinator implements over its database; the CA signs
// CRLs from it, numbered in increasing order.
package builtin

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Defaults for zero options.
const (
	DefaultName        = "tokenfleet CA"
	DefaultKeyType     = protocol.KeyP384
	DefaultValidity    = 3653 * 24 * time.Hour // ten years
	DefaultCRLValidity = 7 * 24 * time.Hour
	DefaultCRLRefresh  = time.Hour
	DefaultBackdate    = 5 * time.Minute

	// maxBackdate keeps a mistyped backdate from issuing certificates valid in the past.
	maxBackdate = 24 * time.Hour
)

func init() {
	ca.Register(ca.TypeBuiltin, func(ctx context.Context, opts ca.Options) (ca.CA, error) {
		return New(ctx, opts)
	})
}

// config is BuiltinOptions checked and with defaults filled in.
type config struct {
	name, organization string
	keyType            protocol.KeyType
	validity           time.Duration
	crlURL, issuerURL  string
	crlValidity        time.Duration
	crlRefresh         time.Duration
	backdate           time.Duration
}

func newConfig(b ca.BuiltinOptions) (config, error) {
	c := config{
		name:         b.Name,
		organization: b.Organization,
		keyType:      b.KeyType,
		validity:     b.Validity,
		crlURL:       b.CRLURL,
		issuerURL:    b.IssuerURL,
		crlValidity:  b.CRLValidity,
		crlRefresh:   b.CRLRefresh,
		backdate:     b.Backdate,
	}
	if c.name == "" {
		c.name = DefaultName
		if c.organization != "" {
			c.name += " " + c.organization
		}
	}
	if c.keyType == "" {
		c.keyType = DefaultKeyType
	}
	if c.validity == 0 {
		c.validity = DefaultValidity
	}
	if c.crlValidity == 0 {
		c.crlValidity = DefaultCRLValidity
	}
	if c.crlRefresh == 0 {
		c.crlRefresh = min(DefaultCRLRefresh, c.crlValidity/2)
	}
	if c.backdate == 0 {
		c.backdate = DefaultBackdate
	}
	switch {
	case c.crlURL == "":
		return config{}, ca.Errorf(ca.CodeConfig, "the CRL URL is required: every certificate names where its CRL is served")
	case !absoluteURL(c.crlURL):
		return config{}, ca.Errorf(ca.CodeConfig, "CRL URL %q is not an absolute http, https or ldap URL", c.crlURL)
	case c.issuerURL != "" && !absoluteURL(c.issuerURL):
		return config{}, ca.Errorf(ca.CodeConfig, "issuer URL %q is not an absolute http, https or ldap URL", c.issuerURL)
	case c.validity < 0 || c.crlValidity < 0 || c.crlRefresh < 0 || c.backdate < 0:
		return config{}, ca.Errorf(ca.CodeConfig, "durations must not be negative")
	case c.crlRefresh > c.crlValidity/2:
		// Relying parties must get a fresh CRL well before the one they hold expires.
		return config{}, ca.Errorf(ca.CodeConfig, "CRL refresh %s exceeds half the CRL validity %s", c.crlRefresh, c.crlValidity)
	case c.backdate > maxBackdate:
		return config{}, ca.Errorf(ca.CodeConfig, "backdate %s exceeds %s", c.backdate, maxBackdate)
	}
	return c, nil
}

func absoluteURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Host != "" && (u.Scheme == "http" || u.Scheme == "https" || u.Scheme == "ldap")
}

// CA is the built-in CA. It implements ca.CA and ca.CRLSource and is safe for
// concurrent use.
type CA struct {
	cfg     config
	auth    authority
	revs    ca.RevocationStore
	numbers ca.CRLNumberer
	log     zerolog.Logger
	now     func() time.Time

	mu       sync.Mutex // guards the fields below, and orders CRL numbers
	crl      *cachedCRL
	crlStale bool // a revocation happened since crl was made
}

var (
	_ ca.CA        = (*CA)(nil)
	_ ca.CRLSource = (*CA)(nil)
)

// New loads the CA, or creates it on first start, and signs a first CRL so that a CA
// that cannot sign fails now rather than at the first request.
func New(ctx context.Context, opts ca.Options) (*CA, error) {
	cfg, err := newConfig(opts.Builtin)
	if err != nil {
		return nil, err
	}
	c := &CA{cfg: cfg, revs: opts.Revocations, log: opts.Logger.With().Str("component", "ca").Logger(), now: opts.Now}
	if c.now == nil {
		c.now = time.Now
	}
	if c.revs == nil {
		c.log.Warn().Msg("no revocation store given: revocations are kept in memory and lost at exit")
		c.revs = &ca.MemRevocations{}
	}
	if n, ok := c.revs.(ca.CRLNumberer); ok {
		c.numbers = n
	} else if opts.DataDir == "" {
		return nil, ca.Errorf(ca.CodeConfig, "a data directory is required to keep the CRL number")
	} else {
		c.numbers = &fileNumberer{path: filepath.Join(opts.DataDir, CRLNumberFileName)}
	}
	now := c.now()
	auth, created, err := loadOrCreate(opts, cfg, now)
	if err != nil {
		return nil, err
	}
	c.auth = auth
	level := zerolog.InfoLevel
	if created {
		level = zerolog.WarnLevel // a new CA: relying parties must be given its certificate
	}
	c.log.WithLevel(level).Bool("created", created).Str("subject", auth.cert.Subject.String()).
		Str("key", describeKey(auth.cert.PublicKey)).Time("not_after", auth.cert.NotAfter).
		Msg("CA ready")
	if left := auth.cert.NotAfter.Sub(now); left < 90*24*time.Hour {
		c.log.Warn().Dur("left_ms", left).Msg("the CA certificate expires soon; certificates are cut at its expiry")
	}
	c.mu.Lock()
	_, err = c.makeCRLLocked(ctx, now)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// CACertificates implements ca.CA.
func (c *CA) CACertificates() []*x509.Certificate {
	return slices.Clone(c.auth.chain)
}

// Sign implements ca.CA.
func (c *CA) Sign(ctx context.Context, req ca.SignRequest) (*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, ca.Errorf(ca.CodeUnavailable, "sign: %w", err)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	now := c.now()
	caCert := c.auth.cert
	if !now.Before(caCert.NotAfter) {
		return nil, ca.Errorf(ca.CodeExpired, "the CA certificate expired on %s", caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(caCert.NotBefore) {
		return nil, ca.Errorf(ca.CodeExpired, "the CA certificate is valid from %s only; check the clock", caCert.NotBefore.UTC().Format(time.RFC3339))
	}
	// Backdated for clock skew, but not before the CA itself is valid.
	notBefore := now.Add(-c.cfg.backdate)
	if notBefore.Before(caCert.NotBefore) {
		notBefore = caCert.NotBefore
	}
	// A certificate outliving its issuer would fail path validation anyway.
	notAfter := now.Add(req.Validity)
	if notAfter.After(caCert.NotAfter) {
		c.log.Warn().Str("job", req.JobID).Time("wanted", notAfter).Time("ca_not_after", caCert.NotAfter).
			Msg("certificate validity cut at the CA's expiry")
		notAfter = caCert.NotAfter
	}
	serial, err := ca.RandomSerial()
	if err != nil {
		return nil, ca.Errorf(ca.CodeUnavailable, "%w", err)
	}
	skid, err := ca.KeyID(req.PublicKey)
	if err != nil {
		return nil, ca.Errorf(ca.CodeBadRequest, "subject key identifier: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               req.Identity.Subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              req.Usages.KeyUsage,
		ExtKeyUsage:           slices.Clone(req.Usages.ExtKeyUsage),
		UnknownExtKeyUsage:    slices.Clone(req.Usages.UnknownExtKeyUsage),
		BasicConstraintsValid: true,
		SubjectKeyId:          skid,
		CRLDistributionPoints: []string{c.cfg.crlURL},
	}
	if c.cfg.issuerURL != "" {
		tmpl.IssuingCertificateURL = []string{c.cfg.issuerURL}
	}
	san, ok, err := ca.SubjectAltName(req.Identity)
	if err != nil {
		return nil, ca.Errorf(ca.CodeBadRequest, "%w", err)
	}
	if ok {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, san)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, req.PublicKey, c.auth.signer)
	if err != nil {
		return nil, ca.Errorf(ca.CodeUnavailable, "sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, ca.Errorf(ca.CodeUnavailable, "parse the issued certificate: %w", err)
	}
	c.log.Info().Str("serial", ca.FormatSerial(serial)).Str("job", req.JobID).Int("attempt", req.Attempt).
		Str("profile", req.Profile).Str("subject", cert.Subject.String()).Time("not_after", notAfter).
		Msg("certificate issued")
	return cert, nil
}

// Revoke implements ca.CA. The revocation is recorded first, then a new CRL is made; if
// making it fails, the revocation stands and the next CRL request tries again.
func (c *CA) Revoke(ctx context.Context, serial *big.Int, reason int, at time.Time) error {
	if serial == nil || serial.Sign() <= 0 {
		return ca.Errorf(ca.CodeBadRequest, "revoke: serial must be positive")
	}
	if err := ca.CheckReason(reason); err != nil {
		return err
	}
	now := c.now()
	if at.IsZero() {
		at = now
	}
	if at.After(now.Add(c.cfg.backdate)) {
		return ca.Errorf(ca.CodeBadRequest, "revocation time %s is in the future", at.UTC().Format(time.RFC3339))
	}
	hex := ca.FormatSerial(serial)
	err := c.revs.Revoke(ctx, ca.Revoked{Serial: new(big.Int).Set(serial), RevokedAt: at.UTC(), Reason: reason})
	if err != nil {
		var ce *ca.Error
		if errors.As(err, &ce) {
			return err
		}
		return ca.Errorf(ca.CodeUnavailable, "revoke %s: %w", hex, err)
	}
	c.log.Info().Str("serial", hex).Int("reason", reason).Time("at", at).Msg("certificate revoked")
	c.remakeCRL(ctx, now, hex, "revocation recorded")
	return nil
}

// remakeCRL makes a new CRL after the revocation list changed (what says how, for the
// log); if that fails, the change stands and the next CRL request tries again.
func (c *CA) remakeCRL(ctx context.Context, now time.Time, serialHex, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crlStale = true
	if _, err := c.makeCRLLocked(ctx, now); err != nil {
		c.log.Error().Err(err).Str("serial", serialHex).Msg(what + " but the CRL could not be made; retrying at the next request")
	}
}

// ReleaseHold implements ca.HoldReleaser: the revocation store forgets the hold, then a new
// CRL is made without the certificate.
func (c *CA) ReleaseHold(ctx context.Context, serial *big.Int) error {
	if serial == nil || serial.Sign() <= 0 {
		return ca.Errorf(ca.CodeBadRequest, "release hold: serial must be positive")
	}
	hs, ok := c.revs.(ca.HoldStore)
	if !ok {
		return ca.Errorf(ca.CodeConfig, "the revocation store cannot lift a hold")
	}
	hex := ca.FormatSerial(serial)
	if err := hs.ReleaseHold(ctx, serial); err != nil {
		var ce *ca.Error
		if errors.As(err, &ce) {
			return err
		}
		return ca.Errorf(ca.CodeUnavailable, "release hold of %s: %w", hex, err)
	}
	c.log.Info().Str("serial", hex).Msg("certificate hold released")
	c.remakeCRL(ctx, c.now(), hex, "hold released")
	return nil
}
