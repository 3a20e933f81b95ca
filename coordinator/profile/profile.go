package profile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// Profile is one certificate profile. Field names in YAML and in the canonical JSON form
// are the snake_case tags.
type Profile struct {
	Name        string  `yaml:"name" json:"name"` // slug: a-z, 0-9, '-'
	Description string  `yaml:"description,omitempty" json:"description,omitempty"`
	Key         KeySpec `yaml:"key" json:"key"`
	// AllowedKeys is what the RA accepts in a CSR; empty means exactly Key.
	AllowedKeys []KeySpec `yaml:"allowed_keys,omitempty" json:"allowed_keys,omitempty"`
	Subject     Subject   `yaml:"subject,omitempty" json:"subject"`
	SANs        SANs      `yaml:"sans,omitempty" json:"sans"`
	KeyUsage    []string  `yaml:"key_usage" json:"key_usage"`
	ExtKeyUsage []string  `yaml:"extended_key_usage" json:"extended_key_usage"`
	Validity    Duration  `yaml:"validity" json:"validity"`
	// RenewBefore turns on standing renewals: a standing rollout of the profile queues a
	// renew job for each certificate this long before it expires. 0: none. Omitted from
	// the canonical form when 0, so profiles without it keep their hash.
	RenewBefore Duration `yaml:"renew_before,omitempty" json:"renew_before,omitempty"`
	// ExpiryWarning asks for a notice to the holder and the help desk when a certificate
	// of the profile has this long left before it expires. 0: none. Omitted from the
	// canonical form when 0, so profiles without it keep their hash.
	ExpiryWarning Duration `yaml:"expiry_warning,omitempty" json:"expiry_warning,omitempty"`
	Token         Token    `yaml:"token,omitempty" json:"token"`
	// Temporary, when set, lets the profile issue temporary tokens: a stand-in for a
	// holder whose own token is suspended, whose certificate lives Temporary.Validity
	// instead of Validity. Omitted from the canonical form when absent, so profiles
	// without it keep their hash.
	Temporary *Temporary `yaml:"temporary,omitempty" json:"temporary,omitempty"`
	PINPolicy PINPolicy  `yaml:"pin_policy" json:"pin_policy"`
	Approval  Approval   `yaml:"approval,omitempty" json:"approval"`
	// Register says what the crypto-device register needs of a request. Omitted from the
	// canonical form when empty, so profiles without it keep their hash.
	Register Register `yaml:"register,omitempty" json:"register,omitzero"`
	// SelfService says what a holder may do for themselves with this profile, without a
	// role. Omitted from the canonical form when empty, so profiles without it keep their
	// hash.
	SelfService SelfService `yaml:"self_service,omitempty" json:"self_service,omitzero"`
}

// SelfService is what the profile lets its holders do for themselves: the same operations
// the help desk has, limited to their own tokens and jobs, through the same approval gates.
type SelfService struct {
	// Request: a holder may queue an issue or renew job for themselves.
	Request bool `yaml:"request,omitempty" json:"request,omitempty"`
	// RevealPIN: a holder may see, once, the user PIN a job set on their token.
	RevealPIN bool `yaml:"reveal_pin,omitempty" json:"reveal_pin,omitempty"`
	// UnblockPIN: a holder may queue an unblock_pin job for their own token.
	UnblockPIN bool `yaml:"unblock_pin,omitempty" json:"unblock_pin,omitempty"`
}

// DocumentRule says whether a request must cite the document (number and date) its
// issuance is based on, as regulated users' registers of crypto devices record.
type DocumentRule string

// Document rules.
const (
	DocumentNone     DocumentRule = ""         // no document is asked; one given is refused
	DocumentOptional DocumentRule = "optional" // a request may cite one
	DocumentRequired DocumentRule = "required" // a request without one is refused
)

// Register is the profile's crypto-device register policy.
type Register struct {
	Document DocumentRule `yaml:"document,omitempty" json:"document,omitempty"`
}

// Temporary is how the profile issues temporary tokens.
type Temporary struct {
	// Validity is the temporary certificate's lifetime (e.g. 7d): short, since the holder
	// gets their own token back or a replacement.
	Validity Duration `yaml:"validity" json:"validity"`
}

// CertificateValidity is the lifetime of a certificate the profile issues: Validity, or
// Temporary.Validity for a temporary token.
func (p Profile) CertificateValidity(temporary bool) time.Duration {
	if temporary && p.Temporary != nil {
		return time.Duration(p.Temporary.Validity)
	}
	return time.Duration(p.Validity)
}

// KeyType names a key algorithm.
type KeyType string

// Key types.
const (
	KeyRSA KeyType = "rsa"
	KeyEC  KeyType = "ec"
)

// KeySpec is a key algorithm with its size (RSA) or curve (EC).
type KeySpec struct {
	Type  KeyType `yaml:"type" json:"type"`
	Size  int     `yaml:"size,omitempty" json:"size,omitempty"`
	Curve string  `yaml:"curve,omitempty" json:"curve,omitempty"`
	// Origin and Escrow belong to the profile's key only (not allowed_keys): where the key
	// pair is made, and whether its private half is archived for recovery. Omitted from the
	// canonical form when empty, so profiles without them keep their hash.
	Origin KeyOrigin `yaml:"origin,omitempty" json:"origin,omitempty"`
	Escrow bool      `yaml:"escrow,omitempty" json:"escrow,omitempty"`
}

// KeyOrigin says where a key pair is generated.
type KeyOrigin string

// Key origins.
const (
	OriginToken  KeyOrigin = ""       // on the token, by the agent (the default)
	OriginServer KeyOrigin = "server" // by the coordinator, archived, then imported onto the token
)

// Algorithm is the spec without origin and escrow: what a CSR's key is compared with.
func (k KeySpec) Algorithm() KeySpec { return KeySpec{Type: k.Type, Size: k.Size, Curve: k.Curve} }

// allowedKeys is what a CSR's key may be: AllowedKeys, or the profile's key's algorithm
// when it is empty.
func (p Profile) allowedKeys() []KeySpec {
	if len(p.AllowedKeys) == 0 {
		return []KeySpec{p.Key.Algorithm()}
	}
	return p.AllowedKeys
}

func (k KeySpec) String() string {
	if k.Type == KeyRSA {
		return fmt.Sprintf("rsa-%d", k.Size)
	}
	return fmt.Sprintf("%s-%s", k.Type, k.Curve)
}

// Subject holds the templates of the subject's attributes. Multi-valued attributes take a
// single template or a list.
type Subject struct {
	CommonName         string    `yaml:"common_name,omitempty" json:"common_name,omitempty"`
	Organization       Templates `yaml:"organization,omitempty" json:"organization,omitempty"`
	OrganizationalUnit Templates `yaml:"organizational_unit,omitempty" json:"organizational_unit,omitempty"`
	Country            Templates `yaml:"country,omitempty" json:"country,omitempty"`
	Province           Templates `yaml:"province,omitempty" json:"province,omitempty"` // ST
	Locality           Templates `yaml:"locality,omitempty" json:"locality,omitempty"`
	StreetAddress      Templates `yaml:"street_address,omitempty" json:"street_address,omitempty"`
	PostalCode         Templates `yaml:"postal_code,omitempty" json:"postal_code,omitempty"`
	SerialNumber       string    `yaml:"serial_number,omitempty" json:"serial_number,omitempty"`
}

// SANs holds the subject alternative name templates. In YAML, `email: true` and
// `upn: true` take the holder's own address; a string is a template; false or absent
// means none.
type SANs struct {
	Email string    `json:"email,omitempty"`
	UPN   string    `json:"upn,omitempty"` // otherName 1.3.6.1.4.1.311.20.2.3, for smart-card logon
	DNS   Templates `json:"dns,omitempty"`
}

// Token says how the job treats the token.
type Token struct {
	// Initialize wipes and initialises the token before use.
	Initialize bool `yaml:"initialize,omitempty" json:"initialize,omitempty"`
	// Label is the token label template, used when initialising (at most 32 bytes; a
	// longer rendered label is cut at a character boundary).
	Label string `yaml:"label,omitempty" json:"label,omitempty"`
	// Model is a selection hint: the agent prefers a token of this model.
	Model string `yaml:"model,omitempty" json:"model,omitempty"`
	// AnyBlank lets the agent pick any uninitialised token; it needs Initialize.
	AnyBlank bool `yaml:"any_blank,omitempty" json:"any_blank,omitempty"`
}

// PINPolicy bounds the PINs the coordinator generates for the token.
type PINPolicy struct {
	MinLength   int  `yaml:"min_length" json:"min_length"`
	MaxLength   int  `yaml:"max_length" json:"max_length"`
	DigitsOnly  bool `yaml:"digits_only,omitempty" json:"digits_only,omitempty"`
	SOPINLength int  `yaml:"so_pin_length,omitempty" json:"so_pin_length,omitempty"` // set when initialising
}

// Approval is the profile's approval policy.
type Approval struct {
	Required           int         `yaml:"required,omitempty" json:"required"`
	Roles              []jobs.Role `yaml:"roles,omitempty" json:"roles,omitempty"`
	Scope              jobs.Scope  `yaml:"scope,omitempty" json:"scope"` // empty means organization
	ExpiresAfter       Duration    `yaml:"expires_after,omitempty" json:"expires_after,omitempty"`
	CAOperatorRequired bool        `yaml:"ca_operator_required,omitempty" json:"ca_operator_required,omitempty"`
}

// Policy returns the approval policy in the form the job rules take.
func (a Approval) Policy() jobs.Policy {
	scope := a.Scope
	if scope == "" {
		scope = jobs.ScopeOrganization
	}
	return jobs.Policy{
		Required:           a.Required,
		Roles:              append([]jobs.Role(nil), a.Roles...),
		Scope:              scope,
		ExpiresAfter:       time.Duration(a.ExpiresAfter),
		CAOperatorRequired: a.CAOperatorRequired,
	}
}

// Load reads every profile in r (one per YAML document), refuses unknown fields, validates
// each profile and returns them in normal form. All problems found are returned together,
// each an *Error with its line, column and field path.
func Load(r io.Reader) ([]Profile, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	return load("", data)
}

// LoadFile loads the profiles of one file; errors name the file.
func LoadFile(path string) ([]Profile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("profile file: %w", err)
	}
	return load(path, data)
}

func load(file string, data []byte) ([]Profile, error) {
	docs, err := yamlstrict.Parse(file, data)
	if err != nil {
		// The parser cannot resynchronise after a syntax error: nothing is loaded.
		return nil, fromYAML(err, "", 0)
	}
	var out []Profile
	var errs []error
	seen := map[string]int{}
	for i, doc := range docs {
		n := i + 1
		if doc.Empty() {
			continue
		}
		var p Profile
		if err := doc.Decode(&p); err != nil {
			// Checking values that did not decode would only repeat the problem.
			errs = append(errs, fromYAML(err, p.Name, n))
			continue
		}
		verr := p.validateIn(n, doc)
		if first, dup := seen[p.Name]; dup && p.Name != "" {
			ps := &problems{profile: p.Name, doc: n, src: doc}
			ps.invalid("name", "defined twice (documents %d and %d)", first, n)
			verr = errors.Join(verr, ps.errs[0])
		} else {
			seen[p.Name] = n
		}
		if verr != nil {
			errs = append(errs, verr)
			continue
		}
		out = append(out, p.Normalized())
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, &Error{Code: CodeInvalidProfile, File: file, Msg: "no profile in input"}
	}
	return out, nil
}

// fromYAML turns the decoder's errors into this package's, keeping position and path.
func fromYAML(err error, name string, doc int) error {
	return yamlstrict.Convert(err, func(ye *yamlstrict.Error) error {
		return &Error{Code: CodeInvalidProfile, Profile: name, Document: doc,
			File: ye.File, Line: ye.Line, Col: ye.Col, Field: ye.Path, Msg: ye.Msg}
	}, func(e error) error {
		return &Error{Code: CodeInvalidProfile, Profile: name, Document: doc, Msg: e.Error()}
	})
}
