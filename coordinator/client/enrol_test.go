package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestEnrolAgents: the client enrols a batch against the real coordinator, and a refused
// batch comes back as an *Error whose Entries name each bad entry.
func TestEnrolAgents(t *testing.T) {
	ctx := context.Background()
	// A broker: enrolment declares the agents' queues before it answers.
	inst := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: testenv.NewBroker(t).URL})
	admin := must(client.New(inst.URL, inst.AdminToken))(t)

	single := must(admin.EnrolAgent(ctx, client.AgentEnrolment{ID: "ws-00", Hostname: "ws-00.acme.example"}))(t)
	batch := []client.AgentEnrolment{{ID: "ws-02", Hostname: "ws-02.acme.example"}, {ID: "ws-01", Hostname: "ws-01.acme.example", BrokerUser: "u-01"}}
	got := must(admin.EnrolAgents(ctx, batch))(t)
	if len(got) != 2 || got[0].ID != "ws-02" || got[1].ID != "ws-01" || !got[0].Approved || got[1].Enrolled.IsZero() {
		t.Fatalf("enrolled %+v", got)
	}
	if got[0].Approved != single.Approved || got[0].Online != single.Online {
		t.Errorf("a batch's agent %+v differs from a single enrolment's %+v", got[0], single)
	}

	_, err := admin.EnrolAgents(ctx, []client.AgentEnrolment{{ID: "ws-03", Hostname: "h"}, {ID: "ws-01", Hostname: "again"}, {ID: "Bad", Hostname: "h"}})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Code != "bad_request" || e.Field != "agents" {
		t.Fatalf("refused batch: %v", err)
	}
	if got := fmt.Sprint(e.Entries); got != fmt.Sprint([]client.ErrorEntry{
		{Index: 1, ID: "ws-01", Code: "conflict", Field: "id", Message: e.Entries[0].Message},
		{Index: 2, ID: "Bad", Code: "bad_request", Field: "id", Message: e.Entries[1].Message},
	}) {
		t.Errorf("entries %s", got)
	}
	if _, err := admin.EnrolAgents(ctx, []client.AgentEnrolment{{ID: "ws-03", Hostname: "h"}, {ID: "ws-01", Hostname: "again"}}); client.ErrorCode(err) != "conflict" {
		t.Errorf("a batch with a taken ID: %v, want conflict", err)
	}
	all := must(client.Collect(admin.AllAgents(ctx, 0)))(t)
	if len(all) != 3 {
		t.Errorf("agents after refused batches: %+v", all)
	}
}
