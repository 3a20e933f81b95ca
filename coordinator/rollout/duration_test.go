package rollout

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want time.Duration
		str  string
	}{
		{"30d", 30 * 24 * time.Hour, "30d"},
		{"12h", 12 * time.Hour, "12h"},
		{"1h30m", 90 * time.Minute, "1h30m"},
		{"90m", 90 * time.Minute, "1h30m"},
		{"90s", 90 * time.Second, "1m30s"},
		{"48h", 48 * time.Hour, "2d"},
		{" 7d ", 7 * 24 * time.Hour, "7d"},
		{"1h0m30s", time.Hour + 30*time.Second, "1h0m30s"},
		{"0s", 0, "0s"},
		{"-1h", -time.Hour, "-1h"},
	} {
		d, err := ParseDuration(tt.in)
		if err != nil || time.Duration(d) != tt.want || d.String() != tt.str {
			t.Errorf("%q: %v (%s), %v; want %v (%s)", tt.in, time.Duration(d), d, err, tt.want, tt.str)
		}
	}
	for in, want := range map[string]string{
		"30":   "needs a unit",
		"1.5d": "whole number",
		"soon": "like 12h",
		"":     "like 12h",
	} {
		if _, err := ParseDuration(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", in, err, want)
		}
	}
}

func TestDurationJSONAndYAML(t *testing.T) {
	t.Parallel()
	type doc struct {
		D Duration `json:"d" yaml:"d"`
	}
	for _, in := range []string{"30d", "12h", "1h30m", "90s"} {
		var j doc
		if err := json.Unmarshal([]byte(`{"d":"`+in+`"}`), &j); err != nil {
			t.Fatalf("json %s: %v", in, err)
		}
		var y doc
		if err := yaml.Unmarshal([]byte("d: "+in), &y); err != nil {
			t.Fatalf("yaml %s: %v", in, err)
		}
		want, _ := ParseDuration(in)
		if j.D != want || y.D != want {
			t.Errorf("%s: json %s yaml %s, want %s", in, j.D, y.D, want)
		}
		b, err := json.Marshal(j)
		if err != nil || string(b) != `{"d":"`+want.String()+`"}` {
			t.Errorf("%s: marshal %s %v", in, b, err)
		}
		yb, err := yaml.Marshal(y)
		if err != nil || strings.TrimSpace(string(yb)) != "d: "+want.String() {
			t.Errorf("%s: yaml marshal %q %v", in, yb, err)
		}
	}
	var j doc
	if err := json.Unmarshal([]byte(`{"d":null}`), &j); err != nil || j.D != 0 {
		t.Errorf("null: %v %v", j.D, err)
	}
	for _, bad := range []string{`{"d":30}`, `{"d":"30"}`, `{"d":"x"}`} {
		if err := json.Unmarshal([]byte(bad), &j); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	var y doc
	for _, bad := range []string{"d: 30", "d: [1h]", "d: soon"} {
		if err := yaml.Unmarshal([]byte(bad), &y); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
