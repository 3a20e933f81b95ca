package profile

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Templates is a list of templates that YAML may also give as one scalar.
type Templates []string

// UnmarshalYAML accepts a string or a list of strings.
func (t *Templates) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag != "!!str" {
			return fmt.Errorf("line %d: want a string or a list of strings, got %s %q", n.Line, strings.TrimPrefix(n.Tag, "!!"), n.Value)
		}
		*t = Templates{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(Templates, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode || c.Tag != "!!str" {
				return fmt.Errorf("line %d: list items must be strings", c.Line)
			}
			out = append(out, c.Value)
		}
		*t = out
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

// UnmarshalYAML reads the sans mapping by hand, because a custom unmarshaler on a struct
// would lose the decoder's unknown-field check: unknown keys are refused here instead.
func (s *SANs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: sans must be a mapping", n.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			return fmt.Errorf("line %d: sans.%s given twice", k.Line, k.Value)
		}
		seen[k.Value] = true
		var err error
		switch k.Value {
		case "email":
			s.Email, err = sanSetting(v, "email", "{{.Email}}")
		case "upn":
			s.UPN, err = sanSetting(v, "upn", "{{.UPN}}")
		case "dns":
			err = s.DNS.UnmarshalYAML(v)
		default:
			return fmt.Errorf("line %d: field %s not found in sans (known: email, upn, dns)", k.Line, k.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sanSetting reads `true` (the holder's own value), `false` (none) or a template.
func sanSetting(n *yaml.Node, name, def string) (string, error) {
	if n.Kind == yaml.ScalarNode {
		switch n.Tag {
		case "!!bool":
			b, err := strconv.ParseBool(n.Value)
			if err != nil {
				return "", fmt.Errorf("line %d: sans.%s: %q is not a boolean", n.Line, name, n.Value)
			}
			if b {
				return def, nil
			}
			return "", nil
		case "!!str":
			return n.Value, nil
		}
	}
	return "", fmt.Errorf("line %d: sans.%s must be true, false or a template string", n.Line, name)
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
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a whole number of days (365d) or a Go duration (36h)", s)
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

// UnmarshalYAML refuses a bare number: its unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 365d or 36h", n.Line)
	}
	if n.Tag == "!!int" || n.Tag == "!!float" {
		return fmt.Errorf("line %d: duration %s needs a unit, e.g. %sd or %sh", n.Line, n.Value, n.Value, n.Value)
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
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
