package api_test

import (
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

func TestErrorPath(t *testing.T) {
	for _, tt := range []struct {
		doc, path, msg string
	}{
		{`{"name": "x", "plan": {"waves": [10, 100]}}`, "", ""},
		{`{"name": "x", "colour": 1}`, "colour", `unknown field "colour"`},
		{`{"name": "x", "dry_run": "yes"}`, "dry_run", "want a boolean, got string"},
		{`{"plan": {"windows": [{"start": "22:00"}, {"start": 22}]}}`, "plan.windows[1].start", "want a string, got number"},
		{`{"plan": {"waves": "10,100"}}`, "plan.waves", "want an array, got string"},
		{`{"plan": {"pause": {"after": "soon"}}}`, "plan.pause.after", `duration "soon"`},
		{`{"template": {"deadline": "48"}}`, "template.deadline", "needs a unit"},
		{`{"selector": {"agents": {"tags": ["a", {"b": 1}]}}}`, "selector.agents.tags[1]", "want a string, got object"},
		{`{"Name": "x", "Plan": {"Max_Concurrent": "many"}}`, "Plan.Max_Concurrent", "want a number, got string"},
		{`[1, 2]`, "", "want an object, got array"},
		{`{"name": `, "", "unexpected EOF"},
	} {
		path, err := api.ErrorPath([]byte(tt.doc), &api.RolloutCreate{})
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if path != tt.path || !strings.Contains(msg, tt.msg) || (tt.msg == "") != (err == nil) {
			t.Errorf("%s: path %q, error %q; want %q and %q", tt.doc, path, msg, tt.path, tt.msg)
		}
	}
}
