package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Envelope is the outer form of every message: who, which job, what type,
// and the body as raw JSON. It is JSON-encoded; the AMQP properties repeat
// some fields (message_id = ID, type = Type, correlation_id = JobID) for the
// broker and tools, but the envelope is authoritative.
//
// Unknown JSON keys are rejected, in the envelope and in bodies. Forward
// compatibility comes from versions, not from tolerance: a receiver that
// skipped fields it does not know could, for instance, ignore a new
// "do not initialise" flag and wipe a token. A new field therefore bumps
// Version, and the rollout order described there keeps old receivers from
// seeing it.
type Envelope struct {
	Version int `json:"version"`
	// ID is the message ID (canonical lowercase UUID); receivers dedupe on
	// it. A message re-sent from an outbox keeps its ID.
	ID   string      `json:"id"`
	Type MessageType `json:"type"`
	// AgentID is the recipient of coordinator → agent messages and the
	// sender of agent → coordinator ones.
	AgentID string `json:"agent_id"`
	// JobID and Attempt are set on job-scoped types only (see
	// MessageType.JobScoped); Attempt is the fencing token.
	JobID   string `json:"job_id,omitempty"`
	Attempt uint32 `json:"attempt,omitempty"`
	// Time is when the message was made, UTC, RFC 3339 with nanoseconds.
	Time time.Time       `json:"time"`
	Body json.RawMessage `json:"body"`
}

// Job returns the envelope's job reference.
func (e *Envelope) Job() JobRef { return JobRef{JobID: e.JobID, Attempt: e.Attempt} }

// NewEnvelope wraps body for agentID with the current version, a fresh
// message ID and the current time. job is the zero JobRef for types that
// are not job-scoped. Nothing is validated here; Encode does that.
func NewEnvelope(agentID string, job JobRef, body Body) (*Envelope, error) {
	if body == nil {
		return nil, NewError(CodeBadRequest, "body: required")
	}
	raw, err := marshal(body)
	if err != nil {
		return nil, NewError(CodeBadRequest, "body: %w", err)
	}
	return &Envelope{
		Version: Version,
		ID:      NewMessageID(),
		Type:    body.MessageType(),
		AgentID: agentID,
		JobID:   job.JobID,
		Attempt: job.Attempt,
		Time:    time.Now().UTC(),
		Body:    raw,
	}, nil
}

// Encode validates e exactly as Decode would and returns its wire form,
// with the body re-encoded from its typed form (canonical: compact, fields
// in declaration order) and the time in UTC. What Encode returns, Decode
// accepts.
func Encode(e *Envelope) ([]byte, error) {
	if e == nil {
		return nil, NewError(CodeBadRequest, "envelope: nil")
	}
	if !SupportedVersion(e.Version) {
		return nil, NewError(CodeUnsupportedVersion, "version %d: this code speaks %d to %d", e.Version, MinVersion, Version)
	}
	c := *e
	c.Time = c.Time.UTC()
	body, err := check(&c)
	if err != nil {
		return nil, err
	}
	if c.Body, err = marshal(body); err != nil {
		return nil, NewError(CodeInternal, "body: %w", err)
	}
	data, err := marshal(&c)
	if err != nil {
		return nil, NewError(CodeInternal, "envelope: %w", err)
	}
	if err := checkSize(c.Type, len(data)); err != nil {
		return nil, err
	}
	return data, nil
}

// Decode parses and fully validates a message: size, JSON shape, version,
// type, envelope fields and the body for that type. Every error is an
// *Error whose code (CodeOf) is what to dead-letter the message with.
func Decode(data []byte) (*Envelope, error) {
	if len(data) > MaxMessageSize {
		return nil, NewError(CodeTooLarge, "message is %d bytes, limit %d", len(data), MaxMessageSize)
	}
	if err := checkJSON(data); err != nil {
		return nil, NewError(CodeMalformed, "%w", err)
	}
	// The version is read first, leniently, so that a message of a future
	// version is reported as such rather than as a shape this version
	// does not know.
	var peek struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &peek); err != nil {
		return nil, NewError(CodeMalformed, "version: %w", err)
	}
	if peek.Version == nil {
		return nil, NewError(CodeBadRequest, "version: required")
	}
	if !SupportedVersion(*peek.Version) {
		return nil, NewError(CodeUnsupportedVersion, "version %d: this receiver speaks %d to %d", *peek.Version, MinVersion, Version)
	}
	var e Envelope
	if err := strictUnmarshal(data, &e); err != nil {
		return nil, NewError(CodeMalformed, "envelope: %w", err)
	}
	if e.Type.Valid() {
		// Before the body is parsed: a 1 MiB heartbeat is refused unread.
		if err := checkSize(e.Type, len(data)); err != nil {
			return nil, err
		}
	}
	if _, err := check(&e); err != nil {
		return nil, err
	}
	e.Time = e.Time.UTC()
	return &e, nil
}

// DecodeBody decodes and validates the body of e as T, failing if e's type
// does not carry a T:
//
//	d, err := protocol.DecodeBody[protocol.JobDispatch](env)
func DecodeBody[T any, PT interface {
	*T
	Body
}](e *Envelope) (T, error) {
	var v T
	want := PT(&v).MessageType()
	if e.Type != want {
		return v, NewError(CodeBadRequest, "message of type %q does not carry a %s body (type %q)", e.Type, fmt.Sprintf("%T", v), want)
	}
	if err := decodeBodyInto(e.Body, &v, PT(&v).Validate); err != nil {
		return v, err
	}
	return v, nil
}

// Payload decodes and validates the body of e as the type its Type names,
// returning a value type (JobDispatch, Result, ...) for a type switch.
func (e *Envelope) Payload() (Body, error) {
	info, ok := messageTypes[e.Type]
	if !ok {
		return nil, NewError(CodeUnknownType, "type %q", e.Type)
	}
	return info.decode(e.Body)
}

// check validates the envelope fields and its body, returning the body.
func check(e *Envelope) (Body, error) {
	if e.Type == "" {
		return nil, NewError(CodeBadRequest, "type: required")
	}
	info, ok := messageTypes[e.Type]
	if !ok {
		return nil, NewError(CodeUnknownType, "type %q; known: %v", e.Type, MessageTypes())
	}
	if err := ValidateMessageID(e.ID); err != nil {
		return nil, err
	}
	if err := ValidateAgentID(e.AgentID); err != nil {
		return nil, err
	}
	if err := checkTime("time", e.Time, true); err != nil {
		return nil, err
	}
	if info.job {
		if err := e.Job().Validate(); err != nil {
			return nil, err
		}
	} else if e.JobID != "" || e.Attempt != 0 {
		return nil, NewError(CodeBadRequest, "job_id, attempt: not allowed on %s messages", e.Type)
	}
	body, err := info.decode(e.Body)
	if err != nil {
		return nil, err
	}
	if h, ok := body.(Hello); ok && !h.Protocol.Contains(e.Version) {
		return nil, NewError(CodeBadRequest, "body.protocol: %d to %d does not include the envelope's version %d", h.Protocol.Min, h.Protocol.Max, e.Version)
	}
	return body, nil
}

func checkSize(t MessageType, n int) error {
	if limit := t.MaxSize(); n > limit {
		return NewError(CodeTooLarge, "%s message is %d bytes, limit %d", t, n, limit)
	}
	return nil
}

// decodeAs is the decoder of one body type, for the type table.
func decodeAs[T Body](raw []byte) (Body, error) {
	var v T
	if err := decodeBodyInto(raw, &v, func() error { return v.Validate() }); err != nil {
		return nil, err
	}
	return v, nil
}

// decodeBodyInto decodes raw strictly into dst, then runs validate.
func decodeBodyInto(raw []byte, dst any, validate func() error) error {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 {
		return NewError(CodeBadRequest, "body: required")
	}
	if trimmed[0] != '{' {
		return NewError(CodeMalformed, "body: not a JSON object")
	}
	if err := strictUnmarshal(raw, dst); err != nil {
		return NewError(CodeMalformed, "body: %w", err)
	}
	return within("body", validate())
}

// marshal encodes without HTML escaping: '<', '>' and '&' stay one byte,
// so that a label or DN cannot grow sixfold past the limits.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// strictUnmarshal decodes exactly one JSON value, refusing unknown fields.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// maxDepth bounds nesting; the deepest message (an inventory result) nests
// about 7 levels.
const maxDepth = 16

const maxKeyLen = 64

// checkJSON walks data once to catch what encoding/json lets through:
// duplicate keys (the last would silently win, so two readers could see two
// different attempts), keys that only match a field case-insensitively,
// excessive nesting, trailing data, and a top level that is not an object.
// All keys of the protocol are lowercase snake_case ASCII, and no body uses
// a JSON map, so that is the rule for every key.
func checkJSON(data []byte) error {
	type frame struct {
		object    bool
		expectKey bool
		keys      map[string]struct{}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*frame
	started := false
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if !started {
				return errors.New("empty message")
			}
			if len(stack) != 0 {
				return errors.New("truncated JSON")
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("not valid JSON: %w", err)
		}
		if !started {
			if tok != json.Delim('{') {
				return errors.New("message is not a JSON object")
			}
			started = true
		} else if len(stack) == 0 {
			return errors.New("data after the JSON object")
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expectKey {
			top := stack[n-1]
			if tok == json.Delim('}') {
				stack = stack[:n-1]
				valueDone()
				continue
			}
			key, _ := tok.(string) // the decoder only yields strings or '}' here
			if err := checkKey(key); err != nil {
				return err
			}
			if _, dup := top.keys[key]; dup {
				return fmt.Errorf("duplicate key %q", key)
			}
			top.keys[key] = struct{}{}
			top.expectKey = false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxDepth {
				return fmt.Errorf("nested deeper than %d levels", maxDepth)
			}
			f := &frame{object: tok == json.Delim('{')}
			if f.object {
				f.expectKey = true
				f.keys = make(map[string]struct{})
			}
			stack = append(stack, f)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

func checkKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("key %q: keys are 1 to %d bytes", key, maxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		b := key[i]
		if isLowerAlnum(b) || b == '_' {
			continue
		}
		return fmt.Errorf("key %q: keys are lowercase snake_case (a-z, 0-9, _)", key)
	}
	return nil
}
