package usb

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// builtinRegistry is the registry shipped with tokenfleet; every entry names its sources.
//
//go:embed registry.yaml
var builtinRegistry []byte

// RegistryVersion is the only "version" a registry file may declare.
const RegistryVersion = 1

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

// file is the on-disk form of a registry.
type file struct {
	Version  int          `yaml:"version"`
	Sources  []Source     `yaml:"sources"`
	Families []familyFile `yaml:"families"`
	Devices  []deviceFile `yaml:"devices"`
}

type familyFile struct {
	Name               string              `yaml:"name"`
	Vendor             string              `yaml:"vendor"`
	TokenManufacturers []string            `yaml:"token_manufacturers"`
	Modules            map[string][]string `yaml:"modules"`
	ModulesSources     []string            `yaml:"modules_sources"`
	Capabilities       []Capability        `yaml:"capabilities"`
	VendorTool         string              `yaml:"vendor_tool"`
	KeyTypes           []KeyType           `yaml:"key_types"`
	Defaults           *Defaults           `yaml:"defaults"`
	Notes              string              `yaml:"notes"`

	at origin // where the entry was read, for errors about it
}

// deviceFile is one VID:PID. Fields left out come from the family; capabilities, modules
// and key_types given here replace the family's (an empty list included).
type deviceFile struct {
	ID           string              `yaml:"id"`
	Model        string              `yaml:"model"`
	Family       string              `yaml:"family"`
	Vendor       string              `yaml:"vendor"`
	Sources      []string            `yaml:"sources"`
	Modules      map[string][]string `yaml:"modules"`
	Capabilities []Capability        `yaml:"capabilities"`
	KeyTypes     []KeyType           `yaml:"key_types"`
	Notes        string              `yaml:"notes"`

	at origin // where the entry was read, for errors about it
}

// origin is a registry entry's place: its file and its path there ("devices[3]").
type origin struct {
	doc  *yamlstrict.Doc
	path string
}

// errorf is a problem with the entry's field sub ("" for the entry itself), at its line
// in its file.
func (o origin) errorf(sub, format string, args ...any) error {
	return fmt.Errorf("token registry %w", o.doc.Errorf(yamlstrict.Join(o.path, sub), format, args...))
}

// fieldError is a problem a check found in one field of an entry.
type fieldError struct {
	field string // relative to the entry, e.g. "modules.linux" or "capabilities[1]"
	msg   string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func fieldErrorf(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// entryError places a check's error at the entry's field; what names the entry.
func (o origin) entryError(what string, err error) error {
	var fe *fieldError
	if errors.As(err, &fe) {
		return o.errorf(fe.field, "%s: %s", what, fe.msg)
	}
	return o.errorf("", "%s: %v", what, err)
}

// Registry maps USB IDs to token models. It is immutable once built, so it is safe for
// concurrent use.
type Registry struct {
	sources  map[string]Source
	families map[string]familyFile
	devices  map[uint32]deviceFile
	models   map[uint32]Model // resolved
}

func key(vid, pid uint16) uint32 { return uint32(vid)<<16 | uint32(pid) }

// builtin parses the embedded registry once; it is checked by tests, so an error here is
// a build defect, reported rather than panicking.
var builtin = sync.OnceValues(func() (*Registry, error) {
	r := &Registry{
		sources:  map[string]Source{},
		families: map[string]familyFile{},
		devices:  map[uint32]deviceFile{},
	}
	return r.merge("builtin registry", strings.NewReader(string(builtinRegistry)))
})

// DefaultRegistry returns the registry shipped with tokenfleet.
func DefaultRegistry() (*Registry, error) { return builtin() }

// LoadRegistry returns the built-in registry with an administrator's registry file (same
// YAML format) merged over it: a device with the same VID:PID or a family with the same
// name replaces the built-in one, a source with the same id replaces its title. Errors name
// the entry at fault.
func LoadRegistry(r io.Reader) (*Registry, error) {
	return LoadRegistryNamed("extra registry", r)
}

// LoadRegistryNamed is LoadRegistry with the name errors should use for the file.
func LoadRegistryNamed(name string, r io.Reader) (*Registry, error) {
	base, err := DefaultRegistry()
	if err != nil {
		return nil, err
	}
	return base.merge(name, r)
}

// LoadRegistryFile is LoadRegistry reading path.
func LoadRegistryFile(path string) (*Registry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token registry: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: a close error loses nothing
	return LoadRegistryNamed(path, f)
}

// merge returns a new registry: r with the file read from rd laid over it. Errors read
// "token registry NAME:LINE:COL: field.path: problem".
func (r *Registry) merge(name string, rd io.Reader) (*Registry, error) {
	data, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("token registry %s: %w", name, err)
	}
	var f file
	// A misspelt field is a mistake, not something to ignore: the decoder refuses it.
	doc, err := yamlstrict.Decode(name, data, &f)
	if err != nil {
		return nil, fmt.Errorf("token registry %w", err)
	}
	top := origin{doc: doc}
	empty := len(f.Sources)+len(f.Families)+len(f.Devices) == 0
	if f.Version != RegistryVersion && (f.Version != 0 || !empty) {
		return nil, top.errorf("version", "version %d is not supported (want %d)", f.Version, RegistryVersion)
	}

	out := &Registry{
		sources:  cloneMap(r.sources),
		families: cloneMap(r.families),
		devices:  cloneMap(r.devices),
	}

	seen := map[string]bool{}
	for i, s := range f.Sources {
		at := origin{doc, yamlstrict.Index("sources", i)}
		if s.ID == "" {
			return nil, at.errorf("id", "empty id")
		}
		what := fmt.Sprintf("source %q", s.ID)
		if seen[s.ID] {
			return nil, at.errorf("id", "%s: duplicate id", what)
		}
		seen[s.ID] = true
		if strings.TrimSpace(s.Title) == "" {
			return nil, at.errorf("title", "%s: empty title", what)
		}
		out.sources[s.ID] = s
	}

	seen = map[string]bool{}
	for i, fam := range f.Families {
		fam.at = origin{doc, yamlstrict.Index("families", i)}
		if fam.Name == "" {
			return nil, fam.at.errorf("name", "empty name")
		}
		what := fmt.Sprintf("family %q", fam.Name)
		if seen[fam.Name] {
			return nil, fam.at.errorf("name", "%s: duplicate name", what)
		}
		seen[fam.Name] = true
		if err := checkFamily(fam); err != nil {
			return nil, fam.at.entryError(what, err)
		}
		out.families[fam.Name] = fam
	}

	seenDev := map[uint32]bool{}
	for i, d := range f.Devices {
		d.at = origin{doc, yamlstrict.Index("devices", i)}
		if d.ID == "" {
			return nil, d.at.errorf("id", "empty id")
		}
		what := fmt.Sprintf("device %q", d.ID)
		vid, pid, err := ParseID(d.ID)
		if err != nil {
			return nil, d.at.errorf("id", "%s: %v", what, err)
		}
		k := key(vid, pid)
		if seenDev[k] {
			return nil, d.at.errorf("id", "%s: duplicate id", what)
		}
		seenDev[k] = true
		if err := checkDevice(d); err != nil {
			return nil, d.at.entryError(what, err)
		}
		out.devices[k] = d
	}

	// References are checked on the merged result: an extra file may use the built-in
	// families and sources. Each entry's errors point into the file it came from.
	for _, fam := range sortedFamilies(out.families) {
		what := fmt.Sprintf("family %q", fam.Name)
		if err := out.checkSources("modules_sources", fam.ModulesSources); err != nil {
			return nil, fam.at.entryError(what, err)
		}
		if fam.Defaults != nil {
			if err := out.checkSources("defaults.source", []string{fam.Defaults.Source}); err != nil {
				return nil, fam.at.entryError(what, err)
			}
		}
	}
	out.models = make(map[uint32]Model, len(out.devices))
	for _, k := range sortedKeys(out.devices) {
		d := out.devices[k]
		what := fmt.Sprintf("device %q", d.ID)
		fam, ok := out.families[d.Family]
		if !ok {
			return nil, d.at.errorf("family", "%s: unknown family %q", what, d.Family)
		}
		if err := out.checkSources("sources", d.Sources); err != nil {
			return nil, d.at.entryError(what, err)
		}
		out.models[k] = out.resolve(k, d, fam)
	}
	return out, nil
}

func checkFamily(f familyFile) error {
	if strings.TrimSpace(f.Vendor) == "" {
		return fieldErrorf("vendor", "empty vendor")
	}
	if err := checkModules(f.Modules); err != nil {
		return err
	}
	if len(f.Modules) > 0 && len(f.ModulesSources) == 0 {
		return fieldErrorf("modules", "modules listed without modules_sources")
	}
	if err := checkCapabilities(f.Capabilities); err != nil {
		return err
	}
	hasTool := slices.Contains(f.Capabilities, CapVendorTool)
	if hasTool && strings.TrimSpace(f.VendorTool) == "" {
		return fieldErrorf("capabilities", "capability vendor-tool needs vendor_tool to name the tool")
	}
	if !hasTool && f.VendorTool != "" {
		return fieldErrorf("vendor_tool", "vendor_tool given without capability vendor-tool")
	}
	if err := checkKeyTypes(f.KeyTypes); err != nil {
		return err
	}
	if d := f.Defaults; d != nil {
		if d.UserPIN == "" && d.SOPIN == "" && d.PUK == "" && d.ManagementKey == "" {
			return fieldErrorf("defaults", "defaults without any PIN or key")
		}
		if d.Source == "" {
			return fieldErrorf("defaults", "defaults without a source")
		}
	}
	for i, m := range f.TokenManufacturers {
		if strings.TrimSpace(m) == "" {
			return fieldErrorf(yamlstrict.Index("token_manufacturers", i), "empty entry in token_manufacturers")
		}
	}
	return nil
}

func checkDevice(d deviceFile) error {
	if strings.TrimSpace(d.Model) == "" {
		return fieldErrorf("model", "empty model")
	}
	if d.Family == "" {
		return fieldErrorf("family", "empty family")
	}
	if len(d.Sources) == 0 {
		return fieldErrorf("sources", "no sources: name where the VID:PID comes from")
	}
	if err := checkModules(d.Modules); err != nil {
		return err
	}
	if err := checkCapabilities(d.Capabilities); err != nil {
		return err
	}
	if i := slices.Index(d.Capabilities, CapVendorTool); i >= 0 {
		return fieldErrorf(yamlstrict.Index("capabilities", i), "capability vendor-tool belongs on the family, with vendor_tool")
	}
	return checkKeyTypes(d.KeyTypes)
}

func checkModules(mods map[string][]string) error {
	for _, goos := range sortedKeys(mods) {
		field := yamlstrict.Join("modules", goos)
		if !slices.Contains(knownOS, goos) {
			return fieldErrorf(field, "unknown OS %q (want one of %s)", goos, strings.Join(knownOS, ", "))
		}
		for i, m := range mods[goos] {
			if strings.TrimSpace(m) == "" {
				return fieldErrorf(yamlstrict.Index(field, i), "empty module name for %s", goos)
			}
		}
	}
	return nil
}

func checkCapabilities(caps []Capability) error {
	for i, c := range caps {
		if !slices.Contains(knownCapabilities, c) {
			return fieldErrorf(yamlstrict.Index("capabilities", i), "unknown capability %q (want one of %s)", c, joinStrings(knownCapabilities))
		}
	}
	return nil
}

func checkKeyTypes(kts []KeyType) error {
	for i, k := range kts {
		if !slices.Contains(knownKeyTypes, k) {
			return fieldErrorf(yamlstrict.Index("key_types", i), "unknown key type %q (want one of %s)", k, joinStrings(knownKeyTypes))
		}
	}
	return nil
}

// checkSources checks that every id in the list field is a defined source.
func (r *Registry) checkSources(field string, ids []string) error {
	for i, id := range ids {
		if _, ok := r.sources[id]; !ok {
			if field == "defaults.source" {
				return fieldErrorf(field, "unknown source %q", id)
			}
			return fieldErrorf(yamlstrict.Index(field, i), "unknown source %q", id)
		}
	}
	return nil
}

func (r *Registry) lookupSources(ids []string) []Source {
	out := make([]Source, 0, len(ids))
	for _, id := range ids {
		out = append(out, r.sources[id])
	}
	return out
}

func (r *Registry) resolve(k uint32, d deviceFile, fam familyFile) Model {
	m := Model{
		VID:                uint16(k >> 16),
		PID:                uint16(k),
		Vendor:             fam.Vendor,
		Name:               d.Model,
		Family:             fam.Name,
		Modules:            map[string][]string{},
		Capabilities:       slices.Clone(fam.Capabilities),
		KeyTypes:           slices.Clone(fam.KeyTypes),
		VendorTool:         fam.VendorTool,
		TokenManufacturers: slices.Clone(fam.TokenManufacturers),
		Sources:            r.lookupSources(d.Sources),
		ModuleSources:      r.lookupSources(fam.ModulesSources),
		Notes:              fam.Notes,
	}
	if d.Vendor != "" {
		m.Vendor = d.Vendor
	}
	if len(m.TokenManufacturers) == 0 {
		m.TokenManufacturers = []string{m.Vendor}
	}
	mods := fam.Modules
	if d.Modules != nil {
		mods = d.Modules
	}
	for goos, list := range mods {
		m.Modules[goos] = slices.Clone(list)
	}
	// A nil slice means "not given here"; an empty one given in the file replaces.
	if d.Capabilities != nil {
		m.Capabilities = slices.Clone(d.Capabilities)
	}
	if d.KeyTypes != nil {
		m.KeyTypes = slices.Clone(d.KeyTypes)
	}
	if fam.Defaults != nil {
		def := *fam.Defaults
		m.Defaults = &def
	}
	if d.Notes != "" {
		if m.Notes != "" {
			m.Notes = d.Notes + " " + m.Notes
		} else {
			m.Notes = d.Notes
		}
	}
	return m
}

// Lookup returns the model registered for vid:pid.
func (r *Registry) Lookup(vid, pid uint16) (Model, bool) {
	m, ok := r.models[key(vid, pid)]
	if !ok {
		return Model{}, false
	}
	return cloneModel(m), true
}

// Match returns the model of a detected device, if the registry knows it.
func (r *Registry) Match(dev Device) (Model, bool) { return r.Lookup(dev.VID, dev.PID) }

// Known reports whether vid:pid is a registered token; it suits Config.Want of the
// enumerator, so only tokens are opened to read their strings.
func (r *Registry) Known(vid, pid uint16) bool {
	_, ok := r.models[key(vid, pid)]
	return ok
}

// Models returns every registered model, ordered by VID:PID.
func (r *Registry) Models() []Model {
	out := make([]Model, 0, len(r.models))
	for _, k := range sortedKeys(r.models) {
		out = append(out, cloneModel(r.models[k]))
	}
	return out
}

// Sources returns every source the registry defines, ordered by id.
func (r *Registry) Sources() []Source {
	out := make([]Source, 0, len(r.sources))
	for _, id := range sortedKeys(r.sources) {
		out = append(out, r.sources[id])
	}
	return out
}

func cloneModel(m Model) Model {
	c := m
	c.Modules = make(map[string][]string, len(m.Modules))
	for k, v := range m.Modules {
		c.Modules[k] = slices.Clone(v)
	}
	c.Capabilities = slices.Clone(m.Capabilities)
	c.KeyTypes = slices.Clone(m.KeyTypes)
	c.TokenManufacturers = slices.Clone(m.TokenManufacturers)
	c.Sources = slices.Clone(m.Sources)
	c.ModuleSources = slices.Clone(m.ModuleSources)
	if m.Defaults != nil {
		d := *m.Defaults
		c.Defaults = &d
	}
	return c
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys[K interface{ ~string | ~uint32 }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

func sortedFamilies(m map[string]familyFile) []familyFile {
	out := make([]familyFile, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func joinStrings[T ~string](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}
