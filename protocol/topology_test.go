package protocol

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	q, err := AgentQueue("ws-0042")
	if err != nil || q != "tokenfleet.agent.ws-0042" {
		t.Errorf("AgentQueue = %q, %v", q, err)
	}
	k, err := EventRoutingKey(TypeResult, "ws-0042")
	if err != nil || k != "result.ws-0042" {
		t.Errorf("EventRoutingKey = %q, %v", k, err)
	}
	k, err = CommandRoutingKey("ws-0042")
	if err != nil || k != "ws-0042" {
		t.Errorf("CommandRoutingKey = %q, %v", k, err)
	}
	u, err := AgentUser("ws-0042")
	if err != nil || u != "agent-ws-0042" {
		t.Errorf("AgentUser = %q, %v", u, err)
	}
	for _, f := range []func(string) (string, error){AgentQueue, CommandRoutingKey, AgentUser} {
		if _, err := f("ws.42"); CodeOf(err) != CodeBadRequest {
			t.Errorf("invalid agent ID accepted: %v", err)
		}
	}
}

func TestEventRoutingKeyErrors(t *testing.T) {
	tests := []struct {
		typ   MessageType
		agent string
		code  ErrorCode
		want  string
	}{
		{TypeDispatch, "ws-1", CodeBadRequest, "type dispatch is sent coordinator→agent, not on the events exchange"},
		{"telemetry", "ws-1", CodeUnknownType, `"telemetry"`},
		{TypeHello, "ws.1", CodeBadRequest, "agent_id"},
	}
	for _, tc := range tests {
		_, err := EventRoutingKey(tc.typ, tc.agent)
		checkErr(t, err, tc.code, tc.want)
	}
}

func TestParseEventRoutingKey(t *testing.T) {
	for _, typ := range MessageTypes() {
		if typ.Direction() != ToCoordinator {
			continue
		}
		key, err := EventRoutingKey(typ, "alice@ws-01")
		if err != nil {
			t.Fatal(err)
		}
		gotType, gotAgent, err := ParseEventRoutingKey(key)
		if err != nil || gotType != typ || gotAgent != "alice@ws-01" {
			t.Errorf("ParseEventRoutingKey(%q) = %q, %q, %v", key, gotType, gotAgent, err)
		}
	}
	tests := []struct {
		key  string
		code ErrorCode
		want string
	}{
		{"result", CodeBadRequest, "want <type>.<agentID>"},
		{"dispatch.ws-1", CodeUnknownType, `"dispatch" is not an agent → coordinator type`},
		{"result.ws.1", CodeBadRequest, `routing key "result.ws.1": agent_id: "ws.1" contains '.'`},
		{"result.", CodeBadRequest, "agent_id: required"},
	}
	for _, tc := range tests {
		_, _, err := ParseEventRoutingKey(tc.key)
		checkErr(t, err, tc.code, tc.want)
	}
}

// Every agent → coordinator type must reach exactly one queue, or events
// vanish (unroutable) or are processed twice.
func TestSharedTopologyRoutesEveryEventOnce(t *testing.T) {
	topo := SharedTopology()
	exchanges := map[string]string{}
	for _, x := range topo.Exchanges {
		if !x.Durable {
			t.Errorf("exchange %s not durable", x.Name)
		}
		exchanges[x.Name] = x.Kind
	}
	want := map[string]string{CommandsExchange: "direct", EventsExchange: "topic", DeadLetterExchange: "fanout"}
	for name, kind := range want {
		if exchanges[name] != kind {
			t.Errorf("exchange %s kind %q, want %q", name, exchanges[name], kind)
		}
	}
	queues := map[string]QueueSpec{}
	for _, q := range topo.Queues {
		queues[q.Name] = q
		for _, b := range q.Bindings {
			if _, ok := exchanges[b.Exchange]; !ok {
				t.Errorf("queue %s bound to undeclared exchange %s", q.Name, b.Exchange)
			}
		}
	}
	for _, typ := range MessageTypes() {
		if typ.Direction() != ToCoordinator {
			continue
		}
		key, err := EventRoutingKey(typ, "ws-1")
		if err != nil {
			t.Fatal(err)
		}
		var hits []string
		for _, q := range topo.Queues {
			for _, b := range q.Bindings {
				if b.Exchange == EventsExchange && topicMatch(b.RoutingKey, key) {
					hits = append(hits, q.Name)
				}
			}
		}
		wantQueue := EventsQueue
		if typ == TypeHeartbeat {
			wantQueue = HeartbeatsQueue
		}
		if !slices.Equal(hits, []string{wantQueue}) {
			t.Errorf("%s reaches %v, want [%s]", key, hits, wantQueue)
		}
	}
	if q := queues[EventsQueue]; q.Args["x-queue-type"] != "quorum" || q.Args["x-dead-letter-exchange"] != DeadLetterExchange || !q.Durable {
		t.Errorf("events queue %+v", q)
	}
	if q := queues[HeartbeatsQueue]; q.Args["x-message-ttl"] != HeartbeatTTL.Milliseconds() {
		t.Errorf("heartbeats queue TTL %v, want %d ms", q.Args["x-message-ttl"], HeartbeatTTL.Milliseconds())
	}
	if q := queues[DeadLetterQueue]; len(q.Bindings) != 1 || q.Bindings[0].Exchange != DeadLetterExchange {
		t.Errorf("dead-letter queue %+v", q)
	}
	for _, q := range topo.Queues {
		for k, v := range q.Args {
			switch v.(type) {
			case string, int64:
			default:
				t.Errorf("queue %s arg %s is a %T; AMQP tables want string or int64", q.Name, k, v)
			}
		}
	}
}

// topicMatch implements AMQP topic matching for the patterns used here:
// words separated by '.', '*' matching exactly one word.
func topicMatch(pattern, key string) bool {
	p, k := strings.Split(pattern, "."), strings.Split(key, ".")
	if len(p) != len(k) {
		return false
	}
	for i := range p {
		if p[i] != "*" && p[i] != k[i] {
			return false
		}
	}
	return true
}

func TestAgentQueueSpec(t *testing.T) {
	q, err := AgentQueueSpec("ws-0042")
	if err != nil {
		t.Fatal(err)
	}
	if q.Name != "tokenfleet.agent.ws-0042" || !q.Durable || q.Args["x-queue-type"] != "classic" ||
		q.Args["x-dead-letter-exchange"] != DeadLetterExchange || len(q.Bindings) != 0 {
		t.Errorf("AgentQueueSpec = %+v, want an unbound classic queue (commands come through the default exchange)", q)
	}
	if _, err := AgentQueueSpec("WS"); err == nil {
		t.Error("invalid agent ID accepted")
	}
}

func TestAgentPermissions(t *testing.T) {
	p, err := AgentPermissions("alice@ws-01")
	if err != nil {
		t.Fatal(err)
	}
	match := func(re, s string) bool {
		ok, err := regexp.MatchString(re, s)
		if err != nil {
			t.Fatalf("regex %q: %v", re, err)
		}
		return ok
	}
	tests := []struct {
		what, re, s string
		want        bool
	}{
		{"configure nothing", p.Configure, "tokenfleet.agent.alice@ws-01", false},
		{"write events", p.Write, EventsExchange, true},
		{"no write on commands", p.Write, CommandsExchange, false},
		{"no write on the default exchange", p.Write, DefaultExchangePermission, false},
		{"read own queue", p.Read, "tokenfleet.agent.alice@ws-01", true},
		{"no read of another queue", p.Read, "tokenfleet.agent.bob@ws-01", false},
		{"no read of a longer name", p.Read, "tokenfleet.agent.alice@ws-01x", false},
		{"publish own result", p.TopicWrite, "result.alice@ws-01", true},
		{"publish own heartbeat", p.TopicWrite, "heartbeat.alice@ws-01", true},
		{"no publishing as another agent", p.TopicWrite, "result.bob@ws-01", false},
		{"no publishing commands", p.TopicWrite, "dispatch.alice@ws-01", false},
		{"no extra words", p.TopicWrite, "result.alice@ws-01.x", false},
		{"dot in regex is literal", p.TopicWrite, "resultXalice@ws-01", false},
		{"no topic reads", p.TopicRead, "result.alice@ws-01", false},
	}
	for _, tc := range tests {
		if got := match(tc.re, tc.s); got != tc.want {
			t.Errorf("%s: %q matches %q = %v, want %v", tc.what, tc.re, tc.s, got, tc.want)
		}
	}
	if p.TopicExchange != EventsExchange {
		t.Errorf("topic exchange %q", p.TopicExchange)
	}
	if _, err := AgentPermissions("*"); err == nil {
		t.Error("wildcard agent ID accepted")
	}
}

// A command's address, as the outbox stores it, becomes the agent's queue through the
// default exchange; other addresses are their own route.
func TestCommandRoute(t *testing.T) {
	ex, key, err := CommandRoute(CommandsExchange, "ws-0042")
	if err != nil || ex != DefaultExchange || key != "tokenfleet.agent.ws-0042" {
		t.Errorf("CommandRoute(commands, ws-0042) = %q, %q, %v", ex, key, err)
	}
	ex, key, err = CommandRoute(EventsExchange, "result.ws-0042")
	if err != nil || ex != EventsExchange || key != "result.ws-0042" {
		t.Errorf("CommandRoute(events, result.ws-0042) = %q, %q, %v", ex, key, err)
	}
	if _, _, err := CommandRoute(CommandsExchange, "WS 42"); err == nil {
		t.Error("a command for an invalid agent ID was routed")
	}
}

func TestCoordinatorPermissions(t *testing.T) {
	p := CoordinatorPermissions()
	for _, tc := range []struct {
		what, re, s string
		want        bool
	}{
		{"configure an agent queue", p.Configure, "tokenfleet.agent.ws-01", true},
		{"configure the events queue", p.Configure, EventsQueue, true},
		{"no configure elsewhere", p.Configure, "other.queue", false},
		{"write events (dead letters, republished)", p.Write, EventsExchange, true},
		{"write the dead-letter exchange", p.Write, DeadLetterExchange, true},
		{"write the default exchange", p.Write, DefaultExchangePermission, true},
		{"no write to another amq exchange", p.Write, "amq.direct", false},
		{"no write elsewhere", p.Write, "other.exchange", false},
		{"read the events queue", p.Read, EventsQueue, true},
		{"no read elsewhere", p.Read, "other.queue", false},
	} {
		if got, err := regexp.MatchString(tc.re, tc.s); err != nil || got != tc.want {
			t.Errorf("%s: %q matches %q = %v (%v), want %v", tc.what, tc.re, tc.s, got, err, tc.want)
		}
	}
}

func TestCheckSender(t *testing.T) {
	result := &Envelope{Type: TypeResult, AgentID: "ws-1"}
	tests := []struct {
		name        string
		e           *Envelope
		user, key   string
		code        ErrorCode
		wantMessage string
	}{
		{"genuine", result, "agent-ws-1", "result.ws-1", "", ""},
		{"no user_id", result, "", "result.ws-1", CodeForgedSender, "user_id property missing; agent ws-1 must publish as agent-ws-1"},
		{"another agent's user", result, "agent-ws-2", "result.ws-1", CodeForgedSender, `envelope claims agent ws-1 but the broker user is "agent-ws-2"`},
		{"routing key of another agent", result, "agent-ws-1", "result.ws-2", CodeForgedSender, `routing key "result.ws-2" does not match`},
		{"routing key of another type", result, "agent-ws-1", "progress.ws-1", CodeForgedSender, "want \"result.ws-1\""},
		{"command from an agent", &Envelope{Type: TypeDispatch, AgentID: "ws-1"}, "agent-ws-1", "dispatch.ws-1", CodeForgedSender, "never sent by agents"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSender(tc.e, tc.user, tc.key)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("got %v", err)
				}
				return
			}
			checkErr(t, err, tc.code, tc.wantMessage)
		})
	}
}

func TestMessageTypeTable(t *testing.T) {
	for _, typ := range MessageTypes() {
		if strings.ContainsAny(string(typ), ".*# ") || strings.ToLower(string(typ)) != string(typ) {
			t.Errorf("type %q is not a single lowercase routing-key word", typ)
		}
		if typ.MaxSize() <= 0 || typ.MaxSize() > MaxMessageSize {
			t.Errorf("%s MaxSize %d", typ, typ.MaxSize())
		}
		if d := typ.Direction(); d != ToAgent && d != ToCoordinator {
			t.Errorf("%s direction %v", typ, d)
		}
		// Jobs and results survive broker restarts; presence does not.
		if typ.Persistent() == (typ == TypeHeartbeat) {
			t.Errorf("%s persistent = %v", typ, typ.Persistent())
		}
	}
	if MessageType("x").Valid() || MessageType("x").MaxSize() != 0 || MessageType("x").Direction().String() != "unknown direction" {
		t.Error("unknown type has properties")
	}
}
