package pkcs11

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Options tune Open. The zero value is what production uses, minus logging.
type Options struct {
	// Logger receives one debug line per operation (never a PIN). The zero value logs
	// nothing.
	Logger zerolog.Logger
	// Wrap, when set, wraps the module's calls: fault injection in tests (see the faults
	// package), tracing. It is called once per Open.
	Wrap func(Backend) Backend
}

// ModuleInfo describes the loaded PKCS#11 library (CK_INFO).
type ModuleInfo struct {
	Path            string `json:"path"`
	Manufacturer    string `json:"manufacturer"`
	Description     string `json:"description"`
	CryptokiVersion string `json:"cryptoki_version"` // e.g. "2.40"
	LibraryVersion  string `json:"library_version"`
}

// Slot is a reader or token holder the module offers.
type Slot struct {
	ID           uint       `json:"id"` // valid in this process only: never store it
	Description  string     `json:"description"`
	Manufacturer string     `json:"manufacturer"`
	TokenPresent bool       `json:"token_present"`
	Removable    bool       `json:"removable"`
	Hardware     bool       `json:"hardware"`
	Free         bool       `json:"free"`  // a token is present and not initialised
	Token        *TokenInfo `json:"token"` // nil when no token is present or the module does not recognise it
}

// PINStatus is what the token says about one PIN's retry counter.
type PINStatus struct {
	CountLow    bool `json:"count_low"`     // a wrong PIN was entered since the last good one
	FinalTry    bool `json:"final_try"`     // one more wrong PIN locks it
	Locked      bool `json:"locked"`        // locked: only the SO (or a wipe) can help
	ToBeChanged bool `json:"to_be_changed"` // the initial PIN, or expired: change it
}

// TokenInfo describes a token (CK_TOKEN_INFO, its flags decoded).
type TokenInfo struct {
	SlotID             uint      `json:"slot_id"` // valid in this process only
	Label              string    `json:"label"`
	Manufacturer       string    `json:"manufacturer"`
	Model              string    `json:"model"`
	Serial             string    `json:"serial"` // the token's identity: select tokens by it, never by slot
	Initialized        bool      `json:"initialized"`
	LoginRequired      bool      `json:"login_required"`
	UserPINInitialized bool      `json:"user_pin_initialized"`
	UserPIN            PINStatus `json:"user_pin"`
	SOPIN              PINStatus `json:"so_pin"`
	WriteProtected     bool      `json:"write_protected"`
	ProtectedAuthPath  bool      `json:"protected_authentication_path"` // PINs are entered on the device
	RNG                bool      `json:"rng"`
	MinPINLen          uint      `json:"min_pin_len"`
	MaxPINLen          uint      `json:"max_pin_len"`
	// Memory in bytes; nil when the token does not tell (CK_UNAVAILABLE_INFORMATION).
	TotalPublicMemory  *uint64 `json:"total_public_memory"`
	FreePublicMemory   *uint64 `json:"free_public_memory"`
	TotalPrivateMemory *uint64 `json:"total_private_memory"`
	FreePrivateMemory  *uint64 `json:"free_private_memory"`
	HardwareVersion    string  `json:"hardware_version"`
	FirmwareVersion    string  `json:"firmware_version"`
	Flags              uint    `json:"flags"` // the raw CKF_* flags
}

// InitOptions initialise a token.
type InitOptions struct {
	Label string // 1 to 32 bytes
	SOPIN string
	// Force allows wiping a token that is already initialised: every object on it is lost.
	Force bool
}

// ID is a CKA_ID. It prints and marshals as hex.
type ID []byte

func (id ID) String() string { return hex.EncodeToString(id) }

// MarshalText gives the hex form.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// KeyType is the algorithm of a key pair.
type KeyType string

// Key types.
const (
	RSA KeyType = "rsa"
	EC  KeyType = "ec"
)

// KeySpec is a key pair's algorithm and size, as a profile states it.
type KeySpec struct {
	Type  KeyType
	Bits  int    // RSA modulus size
	Curve string // EC: "P-256", "P-384" or "P-521"
}

// String gives the spec in the form ParseKeySpec reads: "rsa-2048", "ec-p256".
func (s KeySpec) String() string {
	switch s.Type {
	case RSA:
		return fmt.Sprintf("rsa-%d", s.Bits)
	case EC:
		return "ec-" + strings.ToLower(strings.ReplaceAll(s.Curve, "-", ""))
	}
	return string(s.Type)
}

// MarshalText gives the String form, so specs read well in JSON and YAML.
func (s KeySpec) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads what ParseKeySpec reads.
func (s *KeySpec) UnmarshalText(b []byte) error {
	spec, err := ParseKeySpec(string(b))
	if err != nil {
		return err
	}
	*s = spec
	return nil
}

// ParseKeySpec reads "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521"
// (case does not matter; "ec-P-256" works too).
func ParseKeySpec(s string) (KeySpec, error) {
	kind, size, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "-")
	if !ok {
		return KeySpec{}, invalidf("parse key spec", "key spec %q: want rsa-BITS or ec-CURVE", s)
	}
	var spec KeySpec
	switch kind {
	case "rsa":
		bits, err := strconv.Atoi(size)
		if err != nil {
			return KeySpec{}, invalidf("parse key spec", "key spec %q: RSA size is not a number", s)
		}
		spec = KeySpec{Type: RSA, Bits: bits}
	case "ec", "ecdsa":
		spec = KeySpec{Type: EC, Curve: "P-" + strings.TrimPrefix(strings.TrimPrefix(size, "p"), "-")}
	default:
		return KeySpec{}, invalidf("parse key spec", "key spec %q: unknown algorithm %q (want rsa or ec)", s, kind)
	}
	return spec, spec.Validate()
}

// Validate checks that the spec names something this package can make.
func (s KeySpec) Validate() error {
	switch s.Type {
	case RSA:
		if s.Bits < 2048 || s.Bits > 16384 || s.Bits%8 != 0 {
			return invalidf("key spec", "RSA size %d: want a multiple of 8 from 2048 to 16384", s.Bits)
		}
		return nil
	case EC:
		if _, ok := curveOIDs[s.Curve]; !ok {
			return invalidf("key spec", "curve %q: want P-256, P-384 or P-521", s.Curve)
		}
		return nil
	}
	return invalidf("key spec", "key type %q: want rsa or ec", s.Type)
}

// Usage says what a private key may do. The zero value means UsageSign.
type Usage uint

// Usages; combine with |.
const (
	UsageSign    Usage = 1 << iota // CKA_SIGN (and CKA_VERIFY on the public key)
	UsageDecrypt                   // RSA: CKA_DECRYPT and CKA_UNWRAP; EC: CKA_DERIVE
)

// KeyRequest asks for a key pair on the token.
type KeyRequest struct {
	ID    []byte // CKA_ID: pairs key and certificate, and makes the request idempotent
	Label string // CKA_LABEL of both halves
	Spec  KeySpec
	Usage Usage
}

// ImportRequest puts an existing private key on the token: an encryption key generated
// elsewhere with an escrow copy.
type ImportRequest struct {
	ID    []byte
	Label string
	Key   crypto.Signer // *rsa.PrivateKey or *ecdsa.PrivateKey
	Usage Usage         // zero means UsageSign
}

// KeyInfo describes a key pair on the token, as a listing shows it.
type KeyInfo struct {
	ID      ID       `json:"id"`
	Label   string   `json:"label"`
	Spec    *KeySpec `json:"spec"`    // nil for key types this package does not know
	Private bool     `json:"private"` // the private half is there (seen only when logged in)
	Public  bool     `json:"public"`  // the public half is there
}

// CertificateWrite asks for a certificate, and optionally its chain, on the token.
type CertificateWrite struct {
	ID    []byte // the CKA_ID of the key the certificate is for
	Label string
	Cert  *x509.Certificate
	Chain []ChainCertificate // issuing CAs, leaf first; optional
}

// ChainCertificate is a CA certificate stored beside the token's own, under its own ID.
type ChainCertificate struct {
	ID    []byte
	Label string
	Cert  *x509.Certificate
}

// WriteResult says what a certificate write did.
type WriteResult int

// Write results.
const (
	Written        WriteResult = iota + 1 // a new certificate object
	AlreadyPresent                        // the same certificate was already there: nothing written
	Replaced                              // written, and the other certificates with its ID removed
)

func (r WriteResult) String() string {
	switch r {
	case Written:
		return "written"
	case AlreadyPresent:
		return "already_present"
	case Replaced:
		return "replaced"
	}
	return "unknown"
}

// Certificate is an X.509 certificate object on the token.
type Certificate struct {
	ID        ID                `json:"id"`
	Label     string            `json:"label"`
	Authority bool              `json:"authority"` // CKA_CERTIFICATE_CATEGORY says CA
	Subject   string            `json:"subject"`
	Issuer    string            `json:"issuer"`
	Serial    string            `json:"serial"` // hex
	NotBefore time.Time         `json:"not_before"`
	NotAfter  time.Time         `json:"not_after"`
	DER       []byte            `json:"-"` // CKA_VALUE
	Cert      *x509.Certificate `json:"-"` // nil when CKA_VALUE does not parse
}

// Mechanism is one mechanism the token offers.
type Mechanism struct {
	Type       uint   `json:"type"` // CKM_*
	Name       string `json:"name"` // "CKM_RSA_PKCS", or the hex value for ones this package does not name
	MinKeySize uint   `json:"min_key_size"`
	MaxKeySize uint   `json:"max_key_size"`
	Flags      uint   `json:"flags"` // CKF_* mechanism flags
}

var curveOIDs = map[string]asn1.ObjectIdentifier{
	"P-256": {1, 2, 840, 10045, 3, 1, 7},
	"P-384": {1, 3, 132, 0, 34},
	"P-521": {1, 3, 132, 0, 35},
}

func invalidf(op, format string, args ...any) error {
	return &Error{Op: op, Code: CodeInvalidArgument, Err: fmt.Errorf(format, args...)}
}
