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

	"gopkg.in/yaml.v3"
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

// merge returns a new registry: r with the file read from rd laid over it.
func (r *Registry) merge(name string, rd io.Reader) (*Registry, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("token registry %s: "+format, append([]any{name}, args...)...)
	}
	dec := yaml.NewDecoder(rd)
	dec.KnownFields(true) // a misspelt field is a mistake, not something to ignore
	var f file
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fail("%w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fail("more than one YAML document")
	}
	empty := len(f.Sources)+len(f.Families)+len(f.Devices) == 0
	if f.Version != RegistryVersion && (f.Version != 0 || !empty) {
		return nil, fail("version %d is not supported (want %d)", f.Version, RegistryVersion)
	}

	out := &Registry{
		sources:  cloneMap(r.sources),
		families: cloneMap(r.families),
		devices:  cloneMap(r.devices),
	}

	seen := map[string]bool{}
	for i, s := range f.Sources {
		where := fmt.Sprintf("sources[%d]", i)
		if s.ID == "" {
			return nil, fail("%s: empty id", where)
		}
		where = fmt.Sprintf("source %q (%s)", s.ID, where)
		if seen[s.ID] {
			return nil, fail("%s: duplicate id", where)
		}
		seen[s.ID] = true
		if strings.TrimSpace(s.Title) == "" {
			return nil, fail("%s: empty title", where)
		}
		out.sources[s.ID] = s
	}

	seen = map[string]bool{}
	for i, fam := range f.Families {
		where := fmt.Sprintf("families[%d]", i)
		if fam.Name == "" {
			return nil, fail("%s: empty name", where)
		}
		where = fmt.Sprintf("family %q (%s)", fam.Name, where)
		if seen[fam.Name] {
			return nil, fail("%s: duplicate name", where)
		}
		seen[fam.Name] = true
		if err := checkFamily(fam); err != nil {
			return nil, fail("%s: %w", where, err)
		}
		out.families[fam.Name] = fam
	}

	seenDev := map[uint32]bool{}
	for i, d := range f.Devices {
		where := fmt.Sprintf("devices[%d]", i)
		if d.ID == "" {
			return nil, fail("%s: empty id", where)
		}
		where = fmt.Sprintf("device %q (%s)", d.ID, where)
		vid, pid, err := ParseID(d.ID)
		if err != nil {
			return nil, fail("%s: %w", where, err)
		}
		k := key(vid, pid)
		if seenDev[k] {
			return nil, fail("%s: duplicate id", where)
		}
		seenDev[k] = true
		if err := checkDevice(d); err != nil {
			return nil, fail("%s: %w", where, err)
		}
		out.devices[k] = d
	}

	// References are checked on the merged result: an extra file may use the built-in
	// families and sources.
	for _, fam := range sortedFamilies(out.families) {
		where := fmt.Sprintf("family %q", fam.Name)
		if err := out.checkSources(fam.ModulesSources); err != nil {
			return nil, fail("%s: modules_sources: %w", where, err)
		}
		if fam.Defaults != nil {
			if err := out.checkSources([]string{fam.Defaults.Source}); err != nil {
				return nil, fail("%s: defaults.source: %w", where, err)
			}
		}
	}
	out.models = make(map[uint32]Model, len(out.devices))
	for _, k := range sortedKeys(out.devices) {
		d := out.devices[k]
		where := fmt.Sprintf("device %q", d.ID)
		fam, ok := out.families[d.Family]
		if !ok {
			return nil, fail("%s: unknown family %q", where, d.Family)
		}
		if err := out.checkSources(d.Sources); err != nil {
			return nil, fail("%s: sources: %w", where, err)
		}
		out.models[k] = out.resolve(k, d, fam)
	}
	return out, nil
}

func checkFamily(f familyFile) error {
	if strings.TrimSpace(f.Vendor) == "" {
		return errors.New("empty vendor")
	}
	if err := checkModules(f.Modules); err != nil {
		return err
	}
	if len(f.Modules) > 0 && len(f.ModulesSources) == 0 {
		return errors.New("modules listed without modules_sources")
	}
	if err := checkCapabilities(f.Capabilities); err != nil {
		return err
	}
	hasTool := slices.Contains(f.Capabilities, CapVendorTool)
	if hasTool && strings.TrimSpace(f.VendorTool) == "" {
		return errors.New("capability vendor-tool needs vendor_tool to name the tool")
	}
	if !hasTool && f.VendorTool != "" {
		return errors.New("vendor_tool given without capability vendor-tool")
	}
	if err := checkKeyTypes(f.KeyTypes); err != nil {
		return err
	}
	if d := f.Defaults; d != nil {
		if d.UserPIN == "" && d.SOPIN == "" && d.PUK == "" && d.ManagementKey == "" {
			return errors.New("defaults without any PIN or key")
		}
		if d.Source == "" {
			return errors.New("defaults without a source")
		}
	}
	for _, m := range f.TokenManufacturers {
		if strings.TrimSpace(m) == "" {
			return errors.New("empty entry in token_manufacturers")
		}
	}
	return nil
}

func checkDevice(d deviceFile) error {
	if strings.TrimSpace(d.Model) == "" {
		return errors.New("empty model")
	}
	if d.Family == "" {
		return errors.New("empty family")
	}
	if len(d.Sources) == 0 {
		return errors.New("no sources: name where the VID:PID comes from")
	}
	if err := checkModules(d.Modules); err != nil {
		return err
	}
	if err := checkCapabilities(d.Capabilities); err != nil {
		return err
	}
	if slices.Contains(d.Capabilities, CapVendorTool) {
		return errors.New("capability vendor-tool belongs on the family, with vendor_tool")
	}
	return checkKeyTypes(d.KeyTypes)
}

func checkModules(mods map[string][]string) error {
	for _, goos := range sortedKeys(mods) {
		if !slices.Contains(knownOS, goos) {
			return fmt.Errorf("modules: unknown OS %q (want one of %s)", goos, strings.Join(knownOS, ", "))
		}
		for _, m := range mods[goos] {
			if strings.TrimSpace(m) == "" {
				return fmt.Errorf("modules: empty module name for %s", goos)
			}
		}
	}
	return nil
}

func checkCapabilities(caps []Capability) error {
	for _, c := range caps {
		if !slices.Contains(knownCapabilities, c) {
			return fmt.Errorf("unknown capability %q (want one of %s)", c, joinStrings(knownCapabilities))
		}
	}
	return nil
}

func checkKeyTypes(kts []KeyType) error {
	for _, k := range kts {
		if !slices.Contains(knownKeyTypes, k) {
			return fmt.Errorf("unknown key type %q (want one of %s)", k, joinStrings(knownKeyTypes))
		}
	}
	return nil
}

func (r *Registry) checkSources(ids []string) error {
	for _, id := range ids {
		if _, ok := r.sources[id]; !ok {
			return fmt.Errorf("unknown source %q", id)
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
