package service_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// TestRolloutInputRefused: specs that would do something else than their author meant
// are refused at creation, naming the field and the fix. (The API's test covers the
// rest of the malformed input.)
func TestRolloutInputRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(300)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(renewProfile)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, field, says string
		edit              func(*rollout.Spec)
	}{
		{"an exponential plan of 150 waves", "spec.plan.exponential", "raise factor", func(s *rollout.Spec) {
			s.Plan = rollout.Plan{Exponential: &rollout.Exponential{Start: 1, Factor: 1.000001}}
		}},
		{"a deadline beyond a year", "spec.template.deadline", "366d", func(s *rollout.Spec) {
			s.Template.Deadline = rollout.Duration(400 * 24 * time.Hour)
		}},
		{"an agent nobody enrolled", "spec.selector.agents.ids[2]", "ws-999", func(s *rollout.Spec) {
			s.Selector.Agents.IDs = []string{"ws-000", "ws-001", "ws-999"}
		}},
		{"an expiry window on a standing rollout", "spec.selector.certificates.expires_within", "renew_before", func(s *rollout.Spec) {
			*s = rollout.Spec{Name: "keep", Standing: true, Template: rollout.Template{Kind: jobs.KindRenew, Profile: "renew"},
				Selector: rollout.Selector{Certificates: rollout.CertificateSelector{ExpiresWithin: rollout.Duration(time.Hour)}}}
		}},
		{"certificates selected for inventories", "spec.selector.certificates", "renew", func(s *rollout.Spec) {
			s.Selector.Certificates.ExpiresWithin = rollout.Duration(30 * 24 * time.Hour)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := inventorySpec("bad")
			tc.edit(&spec)
			_, err := r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: spec, DryRun: true})
			var se *service.Error
			if !errors.As(err, &se) || se.Code != service.CodeBadRequest || se.Field != tc.field || !strings.Contains(se.Msg, tc.says) {
				t.Fatalf("got %v, want bad_request on %s saying %q", err, tc.field, tc.says)
			}
		})
	}
}
