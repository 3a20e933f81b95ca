package usb

import (
	_ "embed"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
)

// builtinRegistry is the registry shipped with tokenfleet; every entry names its sources.
//
//go:embed registry.yaml
var builtinRegistry []byte

// RegistryVersion is the only "version" a registry file may declare.
const RegistryVersion = 1

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
