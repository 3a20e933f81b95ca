package usb

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

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
