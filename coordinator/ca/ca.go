package ca

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// CA is a certificate authority back end.
type CA interface {
	// Sign issues a certificate for req. The certificate carries req's subject, SANs,
	// usages and key, a validity of req.Validity from now (never past the CA's own), and
	// a random serial.
	Sign(ctx context.Context, req SignRequest) (*x509.Certificate, error)
	// Revoke records the revocation of the certificate with this serial, with an RFC
	// 5280 reason code (see Reason*) at time at (zero means now). Revoking a revoked
	// certificate gives CodeAlreadyRevoked.
	Revoke(ctx context.Context, serial *big.Int, reason int, at time.Time) error
	// CACertificates returns the issuing CA's certificate first, then its issuers, if
	// any: what relying parties and tokens need to build the path.
	CACertificates() []*x509.Certificate
}

// CRLSource is a CA whose CRL the coordinator publishes (see CRLHandler). External CAs
// that publish their own CRL do not implement it.
type CRLSource interface {
	// CRL returns the current CRL, DER encoded, signed by the CA; it is regenerated
	// after a revocation and well before its nextUpdate.
	CRL(ctx context.Context) ([]byte, error)
}

// SignRequest is what the RA asks the CA to certify. Every name comes from the approved
// request and the holder's directory attributes, never from the CSR.
type SignRequest struct {
	// PublicKey is the key of the checked CSR.
	PublicKey crypto.PublicKey
	// Identity gives the subject and the SANs: e-mail addresses (rfc822Name), UPNs
	// (otherName of type profile.OIDUPN) and DNS names. TokenLabel is not used.
	Identity profile.Identity
	// Usages are the profile's key usage and extended key usages.
	Usages profile.Usages
	// Validity is the profile's certificate lifetime.
	Validity time.Duration

	// For the CA's records and logs.
	JobID   string
	Attempt int
	Profile string
}

// Validate checks that req can be signed: a supported key, at least one name, usages and
// a positive validity. Errors have CodeBadRequest, or CodeWeakKey for the key.
func (r SignRequest) Validate() error {
	if r.PublicKey == nil {
		return Errorf(CodeBadRequest, "no public key")
	}
	if _, err := protocol.KeyTypeOf(r.PublicKey); err != nil {
		return Errorf(CodeWeakKey, "public key refused: %w", err)
	}
	// KeyTypeOf checks sizes and curves only; a small or even exponent is weak too.
	if k, ok := r.PublicKey.(*rsa.PublicKey); ok && (k.E < 65537 || k.E%2 == 0) {
		return Errorf(CodeWeakKey, "RSA public exponent %d refused (odd, at least 65537)", k.E)
	}
	id := r.Identity
	if SubjectEmpty(id.Subject) && len(id.Emails)+len(id.UPNs)+len(id.DNSNames) == 0 {
		return Errorf(CodeBadRequest, "neither subject nor subject alternative name: the certificate would name nobody")
	}
	for _, e := range id.Emails {
		if !ia5(e) || !strings.Contains(e, "@") {
			return Errorf(CodeBadRequest, "e-mail SAN %q is not an ASCII address", e)
		}
	}
	for _, d := range id.DNSNames {
		if !ia5(d) || d == "" || strings.ContainsAny(d, " *") {
			return Errorf(CodeBadRequest, "DNS SAN %q is not an ASCII host name", d)
		}
	}
	for _, u := range id.UPNs {
		if u == "" || !utf8.ValidString(u) || strings.IndexFunc(u, unicode.IsControl) >= 0 {
			return Errorf(CodeBadRequest, "UPN SAN %q is empty, not UTF-8 or holds control characters", u)
		}
	}
	if r.Usages.KeyUsage == 0 {
		return Errorf(CodeBadRequest, "no key usage")
	}
	if len(r.Usages.ExtKeyUsage)+len(r.Usages.UnknownExtKeyUsage) == 0 {
		// Without an EKU a certificate is good for any purpose.
		return Errorf(CodeBadRequest, "no extended key usage")
	}
	if r.Validity <= 0 {
		return Errorf(CodeBadRequest, "validity %s is not positive", r.Validity)
	}
	return nil
}

// ia5 reports whether s is printable ASCII, which IA5String SANs must be here.
func ia5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Options configures a back end. Fields a back end does not use are ignored by it.
type Options struct {
	// Type is the registry name of the back end; empty means TypeBuiltin.
	Type string
	// DataDir is a directory the back end owns (the coordinator gives it a subdirectory
	// of its data directory); the built-in CA keeps its key, certificate and CRL number
	// there.
	DataDir string
	// Revocations keeps the revocation list of CAs that publish their CRL through the
	// coordinator. The coordinator implements it over its store; nil means an in-memory
	// list, for tests.
	Revocations RevocationStore
	// Logger receives issuance, revocation and CRL events.
	Logger zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// Builtin configures the built-in CA.
	Builtin BuiltinOptions
}

// BuiltinOptions configures the built-in CA (package ca/builtin). Zero durations take
// the defaults documented there.
type BuiltinOptions struct {
	// CertFile and KeyFile name an existing CA certificate (PEM; the issuing CA first,
	// then its issuers) and its private key (PEM, unencrypted, not readable by others).
	// Both or neither: without them the CA is loaded from DataDir, or created there on
	// first start.
	CertFile string
	KeyFile  string

	// Name and Organization make the subject of a created CA; Name defaults to
	// "tokenfleet CA", followed by Organization when set.
	Name         string
	Organization string
	// KeyType is the key of a created CA: p256, p384 (the default), rsa3072 or rsa4096.
	KeyType protocol.KeyType
	// Validity is the lifetime of a created CA.
	Validity time.Duration

	// CRLURL is the address where the coordinator serves the CRL; it is named in the CRL
	// distribution points of every certificate. Required.
	CRLURL string
	// IssuerURL, when set, is named in every certificate's authority information access
	// as where to fetch the CA certificate.
	IssuerURL string
	// CRLValidity is the time from a CRL's thisUpdate to its nextUpdate.
	CRLValidity time.Duration
	// CRLRefresh is the age after which the cached CRL is made again when asked for,
	// which also picks up revocations made by other coordinators sharing the store.
	CRLRefresh time.Duration
	// Backdate moves NotBefore into the past to absorb clock skew between the
	// coordinator and relying parties.
	Backdate time.Duration
}

// TypeBuiltin is the registry name of the built-in CA.
const TypeBuiltin = "builtin"

// Factory makes a back end from its options.
type Factory func(ctx context.Context, opts Options) (CA, error)

var registry = struct {
	mu sync.RWMutex // guards m
	m  map[string]Factory
}{m: map[string]Factory{}}

// Register makes a back end available to New under typ. It panics when typ is empty or
// taken: registration happens at init time, and a clash is a build mistake.
func Register(typ string, f Factory) {
	if typ == "" || f == nil {
		panic("ca: Register with an empty type or a nil factory")
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if _, dup := registry.m[typ]; dup {
		panic("ca: back end " + typ + " registered twice")
	}
	registry.m[typ] = f
}

// Types lists the registered back ends, sorted.
func Types() []string {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	out := make([]string, 0, len(registry.m))
	for t := range registry.m {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// New makes the back end opts.Type names.
func New(ctx context.Context, opts Options) (CA, error) {
	typ := opts.Type
	if typ == "" {
		typ = TypeBuiltin
	}
	registry.mu.RLock()
	f, ok := registry.m[typ]
	registry.mu.RUnlock()
	if !ok {
		return nil, Errorf(CodeConfig, "unknown CA type %q (registered: %s); is its package imported?", typ, strings.Join(Types(), ", "))
	}
	return f(ctx, opts)
}
