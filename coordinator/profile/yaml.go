package profile

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// Templates is a list of templates that YAML may also give as one scalar.
type Templates []string

// UnmarshalYAML accepts text or a list of text; a number or true/false is refused, since
// a template is text.
func (t *Templates) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag != "!!str" {
			return fmt.Errorf("want text or a list of text, got %s (quote it)", yamlstrict.Found(n))
		}
		*t = Templates{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(Templates, 0, len(n.Content))
		var errs []error
		for i, c := range n.Content {
			if c.Kind != yaml.ScalarNode || c.Tag != "!!str" {
				errs = append(errs, &yamlstrict.Error{Line: c.Line, Col: c.Column, Path: yamlstrict.Index("", i),
					Msg: "list items must be text, got " + yamlstrict.Found(c)})
				continue
			}
			out = append(out, c.Value)
		}
		*t = out
		return errors.Join(errs...)
	}
	return fmt.Errorf("want text or a list of text, got %s", yamlstrict.Found(n))
}

// sansFile is the YAML form of SANs: the walker refuses unknown and repeated keys.
type sansFile struct {
	Email sanSetting `yaml:"email"`
	UPN   sanSetting `yaml:"upn"`
	DNS   Templates  `yaml:"dns"`
}

// UnmarshalYAML reads the sans mapping through sansFile, so that it is as strict as the
// rest of the profile.
func (s *SANs) UnmarshalYAML(n *yaml.Node) error {
	f := sansFile{Email: sanSetting{def: "{{.Email}}"}, UPN: sanSetting{def: "{{.UPN}}"}}
	err := yamlstrict.DecodeNode(n, &f)
	*s = SANs{Email: f.Email.value, UPN: f.UPN.value, DNS: f.DNS}
	return err
}

// sanSetting is `true` (the holder's own value, def), `false` (none) or a template.
type sanSetting struct {
	def, value string
}

func (s *sanSetting) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		switch n.Tag {
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				break
			}
			if b {
				s.value = s.def
			}
			return nil
		case "!!str":
			s.value = n.Value
			return nil
		}
	}
	return fmt.Errorf("want true, false or a template, got %s", yamlstrict.Found(n))
}

// Duration is a time span written as a Go duration ("36h", "90m") or whole days ("365d").
type Duration time.Duration

// ParseDuration reads "<n>d" or a Go duration.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("duration %q: days must be a whole number, e.g. 365d", s)
		}
		return Duration(time.Duration(n) * 24 * time.Hour), nil
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("duration %s needs a unit, e.g. %sd or %sh", s, s, s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a whole number of days (365d) or a duration like 36h or 90m", s)
	}
	return Duration(d), nil
}

// String gives whole days as "<n>d", anything else as a Go duration.
func (d Duration) String() string {
	const day = 24 * time.Hour
	if td := time.Duration(d); td != 0 && td%day == 0 {
		return strconv.FormatInt(int64(td/day), 10) + "d"
	}
	return time.Duration(d).String()
}

// UnmarshalYAML refuses a bare number (ParseDuration does): its unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration like 365d or 36h, got %s", yamlstrict.Found(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML writes the String form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON writes the String form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads the String form.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML writes the sans back in the form UnmarshalYAML reads.
func (s SANs) MarshalYAML() (any, error) {
	m := map[string]any{}
	if s.Email != "" {
		m["email"] = s.Email
	}
	if s.UPN != "" {
		m["upn"] = s.UPN
	}
	if len(s.DNS) > 0 {
		m["dns"] = []string(s.DNS)
	}
	return m, nil
}
