package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests set up vhosts, users and permissions through RabbitMQ's management HTTP API:
// rabbitmqctl starts an Erlang VM per call (about 2 s), the API answers in milliseconds.

// ManagementURL is the management API of the shared broker; guest/guest may use it from
// localhost.
const ManagementURL = "http://127.0.0.1:15672/api"

const managementHint = "enable it with `make test` (scripts/ensure-deps.sh enables it) or: " +
	"rabbitmq-plugins enable rabbitmq_management"

// The timeout is generous: the broker may be busy. No keep-alives: an idle connection's
// goroutines would count as leaks in tests that check for them.
var mgmtClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.code, strings.TrimSpace(e.body))
}

var (
	mgmtOnce sync.Once
	mgmtErr  error
)

// CheckManagementAPI says, once per process, whether the broker's management API answers,
// and how to enable it when it does not.
func CheckManagementAPI() error {
	mgmtOnce.Do(func() {
		var o struct {
			RabbitMQVersion string `json:"rabbitmq_version"`
		}
		if err := mgmtDo("GET", "/overview", nil, &o); err != nil {
			mgmtErr = fmt.Errorf("RabbitMQ's management API does not answer at %s (%w); %s", ManagementURL, err, managementHint)
		}
	})
	return mgmtErr
}

// mgmt calls the management API and fails the test when the call fails.
func mgmt(t testing.TB, method, path string, body any) {
	t.Helper()
	if err := mgmtDo(method, path, body, nil); err != nil {
		t.Fatalf("testenv: RabbitMQ management API %s %s: %v; %s", method, path, err, managementHint)
	}
}

// ManagementGet decodes the answer of a GET on the management API (path below /api, with
// names escaped) into out, failing the test when the call fails.
func ManagementGet(t testing.TB, path string, out any) {
	t.Helper()
	if err := mgmtDo("GET", path, nil, out); err != nil {
		t.Fatalf("testenv: RabbitMQ management API GET %s: %v; %s", path, err, managementHint)
	}
}

func mgmtDo(method, path string, body, out any) error {
	return mgmtRequest(method, path, body, out, "")
}

// mgmtDoReason is a DELETE of a connection with the reason its client is told.
func mgmtDoReason(method, path, reason string) error {
	return mgmtRequest(method, path, nil, nil, reason)
}

func mgmtRequest(method, path string, body, out any, reason string) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, ManagementURL+path, rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth("guest", "guest")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if reason != "" {
		req.Header.Set("X-Reason", reason)
	}
	resp, err := mgmtClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &statusError{code: resp.StatusCode, body: string(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decoding %s: %w", data, err)
		}
	}
	return nil
}

// List returns what the management API lists of the broker's vhost: "queues",
// "exchanges", "bindings", "consumers", "connections". Message counts lag by up to the
// broker's statistics interval (5 s by default): poll for them.
func (b *Broker) List(t testing.TB, what string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	ManagementGet(t, "/"+what+"/"+url.PathEscape(b.VHost), &rows)
	return rows
}

// TraceExchange is where RabbitMQ's firehose copies each message published in a vhost
// that traces (Broker.Trace), with routing key "publish." + the exchange's name.
const TraceExchange = "amq.rabbitmq.trace"

// Trace turns on RabbitMQ's firehose in the broker's vhost (rabbitmqctl trace_on): every
// message published there is copied to TraceExchange, whichever exchange it went to.
// Tests see through it what no binding can show them, such as what goes through the
// default exchange. The vhost is the test's own, so nothing else is traced.
func (b *Broker) Trace(t testing.TB) {
	t.Helper()
	mgmt(t, "PUT", "/vhosts/"+url.PathEscape(b.VHost), map[string]any{"tracing": true})
}
