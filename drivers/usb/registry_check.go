package usb

import (
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

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
