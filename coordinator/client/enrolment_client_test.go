package client_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestEnrolmentKeys: codes and keys are created with their secrets, listed in pages
// without them, filtered, and revoked, against the real coordinator.
func TestEnrolmentKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	admin := must(client.New(inst.URL, inst.AdminToken))(t)
	must(admin.CreateOrg(ctx, "acme"))(t)

	key := must(admin.CreateEnrolmentKeys(ctx, client.EnrolmentKeyCreate{Kind: client.KindKey, Name: "paris", Organization: "acme",
		Tags: []string{"site:paris"}, MaxUses: 5, ExpiresIn: "72h"}))(t)
	if len(key.Items) != 1 || !strings.HasPrefix(key.Items[0].Secret, "tfe_") || key.Items[0].Organization != "acme" ||
		key.Items[0].MaxUses != 5 || key.Items[0].Expires.Sub(key.Items[0].Created).Round(time.Second) != 72*time.Hour {
		t.Fatalf("created key %+v", key.Items)
	}
	codes := must(admin.CreateEnrolmentKeys(ctx, client.EnrolmentKeyCreate{Kind: client.KindCode, Count: 3, PreApproved: true}))(t)
	if len(codes.Items) != 3 || codes.Items[0].Secret == codes.Items[1].Secret || codes.Items[2].Kind != client.KindCode {
		t.Fatalf("created codes %+v", codes.Items)
	}
	_, err := admin.CreateEnrolmentKeys(ctx, client.EnrolmentKeyCreate{Kind: client.KindCode, MaxUses: 2})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Field != "max_uses" {
		t.Errorf("a code for two uses: %v", err)
	}

	all := must(client.Collect(admin.AllEnrolmentKeys(ctx, client.EnrolmentKeyFilter{}, 1)))(t)
	if len(all) != 4 || all[0].ID != key.Items[0].ID {
		t.Fatalf("listed %+v", all)
	}
	for _, k := range all {
		if k.Secret != "" {
			t.Errorf("%s listed with its secret", k.ID)
		}
	}
	if ks := must(client.Collect(admin.AllEnrolmentKeys(ctx, client.EnrolmentKeyFilter{Kind: client.KindCode}, 0)))(t); len(ks) != 3 {
		t.Errorf("codes listed: %d", len(ks))
	}

	revoked := must(admin.RevokeEnrolmentKey(ctx, key.Items[0].ID, "leaked"))(t)
	if revoked.Revoked.IsZero() || revoked.ID != key.Items[0].ID {
		t.Errorf("revoked %+v", revoked)
	}
	usable := must(client.Collect(admin.AllEnrolmentKeys(ctx, client.EnrolmentKeyFilter{Usable: true}, 0)))(t)
	if len(usable) != 3 {
		t.Errorf("usable after the revocation: %+v", usable)
	}
	_, err = admin.RevokeEnrolmentKey(ctx, "nope", "")
	wantCode(t, err, "not_found")
	if _, err := admin.RevokeEnrolmentKey(ctx, " ", ""); err == nil || client.ErrorCode(err) != "" {
		t.Errorf("an empty ID was sent: %v", err)
	}
}

// TestAgentLifeCycle: agents listed by state; the life-cycle calls reach the coordinator,
// whose refusals come back with their codes. Without broker management, what provisions a
// broker user answers unavailable.
func TestAgentLifeCycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	inst.EnrolAgent(t, "ws-01", "ws-01.acme.example")
	err := inst.Store.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.CreateAgent(ctx, store.Agent{ID: "ws-02", Hostname: "ws-02.acme.example", State: store.AgentPending})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	admin := must(client.New(inst.URL, inst.AdminToken))(t)

	pending := must(client.Collect(admin.AllAgentsBy(ctx, client.AgentFilter{State: client.AgentPending}, 0)))(t)
	if len(pending) != 1 || pending[0].ID != "ws-02" || pending[0].State != client.AgentPending {
		t.Errorf("pending agents %+v", pending)
	}
	if all := must(client.Collect(admin.AllAgents(ctx, 1)))(t); len(all) != 2 {
		t.Errorf("all agents %+v", all)
	}
	_, err = admin.ListAgentsBy(ctx, client.AgentFilter{State: "asleep"}, client.Page{})
	wantCode(t, err, "bad_request")

	_, err = admin.ApproveAgent(ctx, "ws-02", "")
	wantCode(t, err, "unavailable")
	_, err = admin.RotateAgentCredentials(ctx, "ws-01", "")
	wantCode(t, err, "unavailable")
	_, err = admin.RejectAgent(ctx, "ws-01", "")
	wantCode(t, err, "conflict")
	_, err = admin.DisableAgent(ctx, "ws-01", "")
	wantCode(t, err, "reason_required")
	a := must(admin.DisableAgent(ctx, "ws-01", "stolen"))(t)
	if a.State != client.AgentDisabled || a.StateReason != "stolen" {
		t.Errorf("disabled %+v", a)
	}
	// Without broker management, enabling gives back the state only.
	if a = must(admin.EnableAgent(ctx, "ws-01", "found"))(t); a.State != client.AgentActive {
		t.Errorf("enabled %+v", a)
	}
	must(admin.DisableAgent(ctx, "ws-01", "stolen again"))(t)
	a = must(admin.RemoveAgent(ctx, "ws-01", "decommissioned"))(t)
	if a.State != client.AgentRemoved {
		t.Errorf("removed %+v", a)
	}
	_, err = admin.RemoveAgent(ctx, "ws-09", "gone")
	wantCode(t, err, "not_found")
	if _, err := admin.ApproveAgent(ctx, "", ""); err == nil || client.ErrorCode(err) != "" {
		t.Errorf("an empty ID was sent: %v", err)
	}
}
