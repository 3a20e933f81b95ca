package amqp

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// refusals records what OnRefused hears.
type refusals struct {
	mu  sync.Mutex // guards all
	all []Refusal
}

func (r *refusals) add(_ context.Context, x Refusal) {
	r.mu.Lock()
	r.all = append(r.all, x)
	r.mu.Unlock()
}

func (r *refusals) list() []Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Refusal(nil), r.all...)
}

// TestRecordedUsersAndRefusals: with SenderAgentRecordedUsers the handler gets the
// broker-validated user_id of any agent user, and OnRefused hears of every message
// dead-lettered before the handler, with the envelope when it decodes.
func TestRecordedUsersAndRefusals(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	coord := coordinatorConn(t, b, "tokenfleet-coordinator test")
	agent := randomAgentID(t)
	agentURL := addAgentUser(t, b, agent)
	if err := coord.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, agent) }); err != nil {
		t.Fatal(err)
	}
	rec, refused := &recorder{}, &refusals{}
	cons, err := coord.Consume(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderAgentRecordedUsers, OnRefused: refused.add}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	ac := openConn(t, Config{URL: agentURL, Name: "tokenfleet-agent " + agent + "@test"})
	genuine := progressEnv(t, agent)
	if err := ac.PublishEvent(ctx, genuine); err != nil {
		t.Fatal(err)
	}
	// The coordinator's own user publishing as the agent, under the agent's routing key:
	// let through to the handler, which sees who really sent it.
	impostor := progressEnv(t, agent)
	if err := coord.PublishEvent(ctx, impostor); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "two events at the handler", func() bool { return rec.count() == 2 })
	users := map[string]string{}
	for _, d := range rec.all() {
		users[d.Envelope.ID] = d.UserID
	}
	if want, _ := protocol.AgentUser(agent); users[genuine.ID] != want || users[impostor.ID] != "guest" {
		t.Errorf("user IDs seen by the handler: %v", users)
	}

	// Refused before the handler: an envelope whose routing key names another agent, and
	// bytes that are no envelope at all.
	misrouted := progressEnv(t, agent)
	if err := coord.Publish(ctx, protocol.EventsExchange, "progress.someone-else", misrouted); err != nil {
		t.Fatal(err)
	}
	raw := rawChannel(t, b.URL)
	if err := raw.PublishWithContext(ctx, protocol.EventsExchange, "result."+agent, false, false,
		amqp091.Publishing{MessageId: "junk-1", Body: []byte("{not json")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "two refusals", func() bool { return len(refused.list()) == 2 })
	byID := map[string]Refusal{}
	for _, r := range refused.list() {
		byID[r.MessageID] = r
	}
	if r := byID[misrouted.ID]; r.Envelope == nil || r.Envelope.ID != misrouted.ID || r.UserID != "guest" ||
		r.RoutingKey != "progress.someone-else" || protocol.CodeOf(r.Err) != protocol.CodeForgedSender || r.Queue != protocol.EventsQueue {
		t.Errorf("misrouted refusal: %+v", r)
	}
	if r := byID["junk-1"]; r.Envelope != nil || protocol.CodeOf(r.Err) != protocol.CodeMalformed || !strings.Contains(r.Err.Error(), "JSON") {
		t.Errorf("junk refusal: %+v", r)
	}
	getN(t, raw, protocol.DeadLetterQueue, 2)
	if rec.count() != 2 {
		t.Errorf("handler saw %d messages, want 2", rec.count())
	}
}
