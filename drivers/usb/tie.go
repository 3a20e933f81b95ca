package usb

import "strings"

// TokenRef is what PKCS#11 says about a token that can tie it to a USB device.
type TokenRef struct {
	Serial       string
	Manufacturer string
}

// Tie finds the USB device a token sits on among devices. PKCS#11 does not say, so this
// is a best effort that prefers no answer to a wrong one:
//  1. a known device whose USB serial equals the token serial;
//  2. otherwise, when exactly one device and exactly one token among tokens (which should
//     include t) claim the same manufacturer, those two.
func Tie(t TokenRef, devices []Identified, tokens []TokenRef) *Identified {
	if serial := strings.TrimSpace(t.Serial); serial != "" {
		for _, d := range devices {
			if strings.EqualFold(strings.TrimSpace(d.Device.Serial), serial) {
				return &d
			}
		}
	}
	var devs []Identified
	for _, d := range devices {
		if ManufacturerMatches(d.Model, t.Manufacturer) {
			devs = append(devs, d)
		}
	}
	if len(devs) != 1 {
		return nil
	}
	n := 0
	for _, o := range tokens {
		if ManufacturerMatches(devs[0].Model, o.Manufacturer) {
			n++
		}
	}
	if n != 1 {
		return nil
	}
	return &devs[0]
}

// ManufacturerMatches reports whether a token's PKCS#11 manufacturer string names one of
// the manufacturers the model's tokens report.
func ManufacturerMatches(m Model, manufacturer string) bool {
	got := strings.ToLower(strings.TrimSpace(manufacturer))
	if got == "" {
		return false
	}
	for _, want := range m.TokenManufacturers {
		if strings.Contains(got, strings.ToLower(want)) {
			return true
		}
	}
	return false
}
