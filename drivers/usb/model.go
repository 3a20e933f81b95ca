package usb

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
)

// Operating systems a family may list PKCS#11 modules for (GOOS values).
const (
	OSLinux   = "linux"
	OSWindows = "windows"
	OSDarwin  = "darwin"
)

var knownOS = []string{OSLinux, OSWindows, OSDarwin}

// Capability is something a token model can or needs.
type Capability string

const (
	// CapPKCS11: the token is reachable through the family's PKCS#11 modules.
	CapPKCS11 Capability = "pkcs11"
	// CapInitToken: C_InitToken through those modules (re)initialises the token.
	CapInitToken Capability = "init-token"
	// CapVendorTool: initialisation or reset needs the vendor tool named in VendorTool.
	CapVendorTool Capability = "vendor-tool"
	// CapPIVManagementKey: the SO role and key management need the PIV management key.
	CapPIVManagementKey Capability = "piv-management-key"
)

var knownCapabilities = []Capability{CapPKCS11, CapInitToken, CapVendorTool, CapPIVManagementKey}

// KeyType names a key algorithm and size a token can generate on board.
type KeyType string

const (
	KeyRSA2048     KeyType = "rsa2048"
	KeyRSA3072     KeyType = "rsa3072"
	KeyRSA4096     KeyType = "rsa4096"
	KeyECP256      KeyType = "ec-p256"
	KeyECP384      KeyType = "ec-p384"
	KeyECP521      KeyType = "ec-p521"
	KeyEd25519     KeyType = "ed25519"
	KeyGOST2012256 KeyType = "gost2012-256"
	KeyGOST2012512 KeyType = "gost2012-512"
)

var knownKeyTypes = []KeyType{
	KeyRSA2048, KeyRSA3072, KeyRSA4096, KeyECP256, KeyECP384, KeyECP521, KeyEd25519,
	KeyGOST2012256, KeyGOST2012512,
}

// Source is a public document a registry entry was taken from.
type Source struct {
	ID    string `yaml:"id" json:"id"`
	Title string `yaml:"title" json:"title"`
	URL   string `yaml:"url,omitempty" json:"url,omitempty"`
}

// Defaults are a model's factory credentials, as publicly documented by Source. They exist
// so an agent can detect a token still on factory PINs and refuse to issue onto it until
// they are changed; they are never secrets.
type Defaults struct {
	UserPIN       string `yaml:"user_pin,omitempty" json:"user_pin,omitempty"`
	SOPIN         string `yaml:"so_pin,omitempty" json:"so_pin,omitempty"`
	PUK           string `yaml:"puk,omitempty" json:"puk,omitempty"`
	ManagementKey string `yaml:"management_key,omitempty" json:"management_key,omitempty"`
	Source        string `yaml:"source" json:"source"`
	Note          string `yaml:"note,omitempty" json:"note,omitempty"`
}

// Model is what the registry knows about one USB VID:PID, with its family's data resolved.
type Model struct {
	VID, PID uint16
	Vendor   string
	Name     string // model name, e.g. "Rutoken ECP"
	Family   string
	// Modules lists PKCS#11 module file names per OS (GOOS), in order of preference.
	Modules      map[string][]string
	Capabilities []Capability
	KeyTypes     []KeyType // empty: unknown, ask the module
	VendorTool   string
	Defaults     *Defaults
	// TokenManufacturers are substrings of CK_TOKEN_INFO.manufacturerID that tokens of
	// this family report; they let a watcher tie a PKCS#11 token to a USB device.
	TokenManufacturers []string
	Sources            []Source // where the VID:PID comes from
	ModuleSources      []Source // where the module names come from
	Notes              string
}

// ID returns the VID:PID in the registry's "vvvv:pppp" form.
func (m Model) ID() string { return FormatID(m.VID, m.PID) }

// Has reports whether the model has capability c.
func (m Model) Has(c Capability) bool { return slices.Contains(m.Capabilities, c) }

// ModuleCandidates returns the PKCS#11 module file names for goos, best first.
func (m Model) ModuleCandidates(goos string) []string { return slices.Clone(m.Modules[goos]) }

// FormatID formats a VID:PID as the registry writes it ("1050:0407").
func FormatID(vid, pid uint16) string { return fmt.Sprintf("%04x:%04x", vid, pid) }

var idPattern = regexp.MustCompile(`^([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})$`)

// ParseID parses "vvvv:pppp" (four hex digits each).
func ParseID(s string) (vid, pid uint16, err error) {
	m := idPattern.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, fmt.Errorf("bad VID:PID %q: want four hex digits each, as \"1050:0407\"", s)
	}
	v, _ := strconv.ParseUint(m[1], 16, 16)
	p, _ := strconv.ParseUint(m[2], 16, 16)
	return uint16(v), uint16(p), nil
}
