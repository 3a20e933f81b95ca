package api_test

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// schemaTypes names the Go type of every schema of openapi.yaml that has one. A schema
// neither here nor in enumSchemas fails the test: a new schema needs its type.
var schemaTypes = map[string]reflect.Type{
	"Error":                     reflect.TypeFor[api.ErrorResponse](),
	"Health":                    reflect.TypeFor[api.Health](),
	"Org":                       reflect.TypeFor[api.Org](),
	"OrgCreate":                 reflect.TypeFor[api.OrgCreate](),
	"OrgList":                   reflect.TypeFor[api.OrgList](),
	"User":                      reflect.TypeFor[api.User](),
	"UserCreate":                reflect.TypeFor[api.UserCreate](),
	"UserList":                  reflect.TypeFor[api.UserList](),
	"Notification":              reflect.TypeFor[api.Notification](),
	"NotificationList":          reflect.TypeFor[api.NotificationList](),
	"APITokenCreate":            reflect.TypeFor[api.APITokenCreate](),
	"APITokenIssued":            reflect.TypeFor[api.APITokenIssued](),
	"UserUpdate":                reflect.TypeFor[api.UserUpdate](),
	"Role":                      reflect.TypeFor[jobs.Role](), // built-in or custom: a string, not an enum
	"APIToken":                  reflect.TypeFor[api.APIToken](),
	"APITokenList":              reflect.TypeFor[api.APITokenList](),
	"CustomRole":                reflect.TypeFor[api.CustomRole](),
	"CustomRoleList":            reflect.TypeFor[api.CustomRoleList](),
	"RecoveryCertificate":       reflect.TypeFor[api.RecoveryCertificate](),
	"RecoveryCertificateList":   reflect.TypeFor[api.RecoveryCertificateList](),
	"RecoveryCertificateAdd":    reflect.TypeFor[api.RecoveryCertificateAdd](),
	"RecoveryCertificateRetire": reflect.TypeFor[api.RecoveryCertificateRetire](),
	"EscrowedKey":               reflect.TypeFor[api.EscrowedKey](),
	"EscrowedKeyList":           reflect.TypeFor[api.EscrowedKeyList](),
	"EncryptionKey":             reflect.TypeFor[api.EncryptionKey](),
	"EncryptionKeyList":         reflect.TypeFor[api.EncryptionKeyList](),
	"RecoveryCreate":            reflect.TypeFor[api.RecoveryCreate](),
	"RecoveryArchive":           reflect.TypeFor[api.RecoveryArchive](),
	"RecoveryDelivery":          reflect.TypeFor[api.RecoveryDelivery](),
	"SealedKey":                 reflect.TypeFor[protocol.Sealed](),
	"CustomRoleCreate":          reflect.TypeFor[api.CustomRoleCreate](),
	"Profile":                   reflect.TypeFor[api.Profile](),
	"ProfileList":               reflect.TypeFor[api.ProfileList](),
	"JobCreate":                 reflect.TypeFor[api.JobCreate](),
	"Document":                  reflect.TypeFor[api.Document](),
	"Register":                  reflect.TypeFor[api.Register](),
	"RegisterEntry":             reflect.TypeFor[api.RegisterEntry](),
	"RegisterEvent":             reflect.TypeFor[api.RegisterEvent](),
	"Job":                       reflect.TypeFor[api.Job](),
	"JobDetail":                 reflect.TypeFor[api.JobDetail](),
	"JobList":                   reflect.TypeFor[api.JobList](),
	"Decision":                  reflect.TypeFor[api.Decision](),
	"Reason":                    reflect.TypeFor[api.Reason](),
	"PasswordSet":               reflect.TypeFor[api.PasswordSet](),
	"OIDCUnlinked":              reflect.TypeFor[api.OIDCUnlinked](),
	"Retry":                     reflect.TypeFor[api.Retry](),
	"UserPIN":                   reflect.TypeFor[api.UserPIN](),
	"Agent":                     reflect.TypeFor[api.Agent](),
	"AgentEnrol":                reflect.TypeFor[api.AgentEnrol](),
	"AgentBatchEnrol":           reflect.TypeFor[api.AgentBatchEnrol](),
	"AgentBatch":                reflect.TypeFor[api.AgentBatch](),
	"ErrorEntry":                reflect.TypeFor[api.ErrorEntry](),
	"AgentRefusal":              reflect.TypeFor[api.AgentRefusal](),
	"AgentState":                reflect.TypeFor[string](),
	"EnrolmentKeyCreate":        reflect.TypeFor[api.EnrolmentKeyCreate](),
	"EnrolmentKey":              reflect.TypeFor[api.EnrolmentKey](),
	"EnrolmentKeys":             reflect.TypeFor[api.EnrolmentKeys](),
	"EnrolmentKeyList":          reflect.TypeFor[api.List[api.EnrolmentKey]](),
	"Enrol":                     reflect.TypeFor[api.Enrol](),
	"Enrolled":                  reflect.TypeFor[api.Enrolled](),
	"Sealed":                    reflect.TypeFor[protocol.Sealed](),
	"AgentList":                 reflect.TypeFor[api.AgentList](),
	"Token":                     reflect.TypeFor[api.Token](),
	"TokenList":                 reflect.TypeFor[api.TokenList](),
	"Certificate":               reflect.TypeFor[api.Certificate](),
	"CertificateList":           reflect.TypeFor[api.CertificateList](),
	"Revoke":                    reflect.TypeFor[api.Revoke](),
	"TokenStateChange":          reflect.TypeFor[api.TokenStateChange](),
	"TokenIssue":                reflect.TypeFor[api.TokenIssue](),
	"TokenLife":                 reflect.TypeFor[api.TokenLife](),
	"TokenLifeBrief":            reflect.TypeFor[api.TokenLifeBrief](),
	"TokenLifeEvent":            reflect.TypeFor[api.TokenLifeEvent](),
	"TokenLifeState":            reflect.TypeFor[string](),
	"CAChain":                   reflect.TypeFor[api.CAChain](),
	"AuditEntry":                reflect.TypeFor[api.AuditEntry](),
	"AuditPage":                 reflect.TypeFor[api.AuditPage](),
	"AuditCheckpoint":           reflect.TypeFor[api.AuditCheckpoint](),
	"AuditCheckpointList":       reflect.TypeFor[api.AuditCheckpointList](),
	"AuditCheckpointKey":        reflect.TypeFor[api.AuditCheckpointKey](),
	// Token.Flags is raw JSON on the Go side: the flags as the coordinator re-encoded
	// them from the agent's protocol.Token.
	"TokenFlags": reflect.TypeFor[protocol.TokenFlags](),

	"Duration":                   reflect.TypeFor[rollout.Duration](),
	"RolloutSpec":                reflect.TypeFor[rollout.Spec](),
	"RolloutCreate":              reflect.TypeFor[api.RolloutCreate](),
	"RolloutTemplate":            reflect.TypeFor[rollout.Template](),
	"RolloutSelector":            reflect.TypeFor[rollout.Selector](),
	"RolloutAgentSelector":       reflect.TypeFor[rollout.AgentSelector](),
	"RolloutTokenSelector":       reflect.TypeFor[rollout.TokenSelector](),
	"RolloutCertificateSelector": reflect.TypeFor[rollout.CertificateSelector](),
	"RolloutHolderSelector":      reflect.TypeFor[rollout.HolderSelector](),
	"RolloutPlan":                reflect.TypeFor[rollout.Plan](),
	"RolloutCanary":              reflect.TypeFor[rollout.Canary](),
	"RolloutExponential":         reflect.TypeFor[rollout.Exponential](),
	"RolloutPause":               reflect.TypeFor[rollout.Pause](),
	"RolloutWindow":              reflect.TypeFor[rollout.Window](),
	"RolloutBrake":               reflect.TypeFor[rollout.Brake](),
	"RolloutDecision":            reflect.TypeFor[api.RolloutDecision](),
	"Rollout":                    reflect.TypeFor[api.Rollout](),
	"RolloutWave":                reflect.TypeFor[api.RolloutWave](),
	"RolloutTally":               reflect.TypeFor[api.RolloutTally](),
	"RolloutTrip":                reflect.TypeFor[api.RolloutTrip](),
	"RolloutCodeCount":           reflect.TypeFor[api.RolloutCodeCount](),
	"RolloutExample":             reflect.TypeFor[api.RolloutExample](),
	"RolloutPreview":             reflect.TypeFor[api.RolloutPreview](),
	"RolloutGroup":               reflect.TypeFor[api.RolloutGroup](),
	"RolloutSkip":                reflect.TypeFor[api.RolloutSkip](),
	"RolloutTarget":              reflect.TypeFor[api.RolloutTarget](),
	"RolloutList":                reflect.TypeFor[api.RolloutList](),
	"RolloutTargetList":          reflect.TypeFor[api.RolloutTargetList](),
}

// textTypes are Go types of another kind that travel as JSON strings (their own
// MarshalJSON): described as type string.
var textTypes = map[reflect.Type]bool{reflect.TypeFor[rollout.Duration](): true}

// rawSchemas are the schemas a json.RawMessage field may refer to: JSON the coordinator
// passes on as it holds it. Audit details are sealed in the chain byte for byte, so the
// API sends them as stored; AuditDetails says what they may hold.
var rawSchemas = map[string]bool{"TokenFlags": true, "AuditDetails": true}

// freeSchemas describe JSON that no Go type has.
var freeSchemas = map[string]bool{"AuditDetails": true, "AuditDetailValue": true}

// requestTypes are the bodies clients send. The server decodes them strictly, so their
// schemas are closed too, but a field a client may leave out is not required. Every other
// object is a response: its schema requires exactly the fields the server always sends
// (those without omitempty), so a response that lacks one, or carries one the description
// does not have, fails the API tests' validation.
var requestTypes = map[reflect.Type]bool{
	reflect.TypeFor[api.OrgCreate]():        true,
	reflect.TypeFor[api.UserCreate]():       true,
	reflect.TypeFor[api.APITokenCreate]():   true,
	reflect.TypeFor[api.JobCreate]():        true,
	reflect.TypeFor[api.Decision]():         true,
	reflect.TypeFor[api.Reason]():           true,
	reflect.TypeFor[api.Retry]():            true,
	reflect.TypeFor[api.AgentEnrol]():       true,
	reflect.TypeFor[api.AgentBatchEnrol]():  true,
	reflect.TypeFor[api.Revoke]():           true,
	reflect.TypeFor[api.TokenStateChange](): true,
	reflect.TypeFor[api.TokenIssue]():       true,
	reflect.TypeFor[api.UserUpdate]():       true,
	reflect.TypeFor[api.CustomRoleCreate](): true,
	reflect.TypeFor[api.RolloutCreate]():    true,
	reflect.TypeFor[api.RolloutDecision]():  true,
	// A rollout's spec is what its creator wrote (the file tokenfleetctl reads); a rollout
	// shows it with the defaults filled, but nothing of it is required beyond the request's.
	reflect.TypeFor[rollout.Spec]():                true,
	reflect.TypeFor[rollout.Template]():            true,
	reflect.TypeFor[rollout.Selector]():            true,
	reflect.TypeFor[rollout.AgentSelector]():       true,
	reflect.TypeFor[rollout.TokenSelector]():       true,
	reflect.TypeFor[rollout.CertificateSelector](): true,
	reflect.TypeFor[rollout.HolderSelector]():      true,
	reflect.TypeFor[rollout.Plan]():                true,
	reflect.TypeFor[rollout.Canary]():              true,
	reflect.TypeFor[rollout.Exponential]():         true,
	reflect.TypeFor[rollout.Pause]():               true,
	reflect.TypeFor[rollout.Window]():              true,
	reflect.TypeFor[rollout.Brake]():               true,
}

// enumValues are the Go constants of the string types the API carries: a field of one of
// these types must be described with exactly these values.
var enumValues = map[reflect.Type][]string{
	reflect.TypeFor[jobs.Permission](): strs(jobs.AllPermissions()),
	reflect.TypeFor[jobs.Kind]():       strs(jobs.Kinds()),
	reflect.TypeFor[jobs.State]():      strs(jobs.States()),
	reflect.TypeFor[jobs.Step]():       strs(jobs.Steps()),
	reflect.TypeFor[jobs.Gate]():       strs([]jobs.Gate{jobs.GateRequest, jobs.GateCAOperator}),
	reflect.TypeFor[jobs.Verdict]():    strs([]jobs.Verdict{jobs.VerdictApprove, jobs.VerdictReject}),
	reflect.TypeFor[rollout.State]():   strs(rollout.States()),
	reflect.TypeFor[rollout.PauseKind](): strs([]rollout.PauseKind{rollout.PauseOperator, rollout.PauseBrake,
		rollout.PausePromote, rollout.PauseProfileChanged}),
	reflect.TypeFor[rollout.Outcome](): strs(rollout.Outcomes()),
}

// enumSchemas are the schemas that are only an enum, and the Go type whose constants they
// list.
var enumSchemas = map[string]reflect.Type{
	"Permission": reflect.TypeFor[jobs.Permission](),
	"JobKind":    reflect.TypeFor[jobs.Kind](),
	"JobState":   reflect.TypeFor[jobs.State](),
	"JobStep":    reflect.TypeFor[jobs.Step](),

	"RolloutState":     reflect.TypeFor[rollout.State](),
	"RolloutPauseKind": reflect.TypeFor[rollout.PauseKind](),
	"RolloutOutcome":   reflect.TypeFor[rollout.Outcome](),
}

func strs[S ~string](vs []S) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

// spec is openapi.yaml as generic YAML.
type spec struct {
	doc     map[string]any
	schemas map[string]any
}

func loadSpec(t *testing.T) spec {
	t.Helper()
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	comps, _ := doc["components"].(map[string]any)
	schemas, _ := comps["schemas"].(map[string]any)
	if len(schemas) == 0 {
		t.Fatal("openapi.yaml has no components.schemas")
	}
	return spec{doc: doc, schemas: schemas}
}

// resolve follows $ref and merges allOf into one object schema.
func (s spec) resolve(node any) (map[string]any, error) {
	m, ok := node.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("schema is %T, not a mapping", node)
	}
	if ref, ok := m["$ref"].(string); ok {
		name, ok := strings.CutPrefix(ref, "#/components/schemas/")
		if !ok {
			return nil, fmt.Errorf("unsupported $ref %q", ref)
		}
		target, ok := s.schemas[name]
		if !ok {
			return nil, fmt.Errorf("$ref to a missing schema %q", name)
		}
		return s.resolve(target)
	}
	all, ok := m["allOf"].([]any)
	if !ok {
		return m, nil
	}
	merged := map[string]any{"type": "object", "properties": map[string]any{}}
	var required []any
	for _, part := range all {
		pm, err := s.resolve(part)
		if err != nil {
			return nil, err
		}
		props, _ := pm["properties"].(map[string]any)
		for k, v := range props {
			merged["properties"].(map[string]any)[k] = v
		}
		r, _ := pm["required"].([]any)
		required = append(required, r...)
	}
	merged["required"] = required
	return merged, nil
}

// jsonField is one JSON property of a Go struct.
type jsonField struct {
	name      string
	omitEmpty bool
	typ       reflect.Type
}

// jsonFields lists the properties encoding/json gives t, embedded structs flattened.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		omit := slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
		out = append(out, jsonField{name: name, omitEmpty: omit, typ: f.Type})
	}
	return out
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

// compare checks the schema node against Go type t and reports every disagreement.
func (s spec) compare(t *testing.T, where string, node any, typ reflect.Type) {
	t.Helper()
	sch, err := s.resolve(node)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if vals, ok := enumValues[typ]; ok {
		s.compareEnum(t, where, sch, vals)
		return
	}
	want := ""
	switch {
	case typ == timeType:
		if sch["type"] != "string" || sch["format"] != "date-time" {
			t.Errorf("%s: a time, described as type %v format %v; want string, date-time", where, sch["type"], sch["format"])
		}
		return
	case typ == rawType:
		// Raw JSON is described by a schema of its own, named in rawSchemas.
		m, _ := node.(map[string]any)
		ref, _ := m["$ref"].(string)
		if name, _ := strings.CutPrefix(ref, "#/components/schemas/"); !rawSchemas[name] {
			t.Errorf("%s: raw JSON, described as %v; want a $ref to one of %v", where, node, rawSchemas)
			return
		}
		want = "object"
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Uint8:
		if sch["type"] != "string" || sch["format"] != "byte" {
			t.Errorf("%s: bytes, described as type %v format %v; want string, byte", where, sch["type"], sch["format"])
		}
		return
	case typ.Kind() == reflect.Pointer:
		// A pointer says "left out or given" in a request; the value is described.
		s.compare(t, where, node, typ.Elem())
		return
	case typ.Kind() == reflect.String || textTypes[typ]:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		want = "integer"
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		want = "number"
	case typ.Kind() == reflect.Map:
		want = "object"
	case typ.Kind() == reflect.Slice:
		if sch["type"] != "array" {
			t.Errorf("%s: a list, described as type %v", where, sch["type"])
			return
		}
		s.compare(t, where+"[]", sch["items"], typ.Elem())
		return
	case typ.Kind() == reflect.Struct:
		s.compareObject(t, where, sch, typ)
		return
	case typ.Kind() == reflect.Pointer:
		// An optional object: nil is left out (omitempty), which compareObject checks.
		s.compare(t, where, node, typ.Elem())
		return
	default:
		t.Errorf("%s: Go type %s has no rule here", where, typ)
		return
	}
	if sch["type"] != want {
		t.Errorf("%s: Go type %s, described as type %v; want %s", where, typ, sch["type"], want)
	}
}

func (s spec) compareObject(t *testing.T, where string, sch map[string]any, typ reflect.Type) {
	t.Helper()
	if sch["type"] != "object" {
		t.Errorf("%s: Go struct %s, described as type %v", where, typ, sch["type"])
		return
	}
	if sch["additionalProperties"] != false {
		t.Errorf("%s: Go struct %s, described as an object open to other properties; want additionalProperties: false", where, typ)
	}
	props, _ := sch["properties"].(map[string]any)
	fields := jsonFields(typ)
	var goNames, specNames []string
	for _, f := range fields {
		goNames = append(goNames, f.name)
	}
	for k := range props {
		specNames = append(specNames, k)
	}
	sort.Strings(goNames)
	sort.Strings(specNames)
	for _, n := range goNames {
		if _, ok := props[n]; !ok {
			t.Errorf("%s: %s has JSON field %q that the description lacks", where, typ, n)
		}
	}
	for _, n := range specNames {
		if !slices.Contains(goNames, n) {
			t.Errorf("%s: the description has property %q that %s lacks", where, n, typ)
		}
	}
	required, _ := sch["required"].([]any)
	for _, r := range required {
		name, _ := r.(string)
		i := slices.IndexFunc(fields, func(f jsonField) bool { return f.name == name })
		if i < 0 {
			t.Errorf("%s: required property %q is no field of %s", where, name, typ)
			continue
		}
		if fields[i].omitEmpty {
			t.Errorf("%s: property %q is required but %s leaves it out when empty", where, name, typ)
		}
	}
	if !requestTypes[typ] {
		for _, f := range fields {
			if !f.omitEmpty && !slices.Contains(required, any(f.name)) {
				t.Errorf("%s: %s always sends %q, which the description does not require", where, typ, f.name)
			}
		}
	}
	for _, f := range fields {
		if p, ok := props[f.name]; ok {
			s.compare(t, where+"."+f.name, p, f.typ)
		}
	}
}

func (s spec) compareEnum(t *testing.T, where string, sch map[string]any, want []string) {
	t.Helper()
	raw, ok := sch["enum"].([]any)
	if !ok {
		t.Errorf("%s: the Go type has constants %v, the description no enum", where, want)
		return
	}
	var got []string
	for _, v := range raw {
		// "" is no constant: it stands for "none" where a field may be empty.
		if v != "" {
			got = append(got, fmt.Sprint(v))
		}
	}
	if !equalSets(got, want) {
		t.Errorf("%s: the description's enum %v, the Go constants %v", where, got, want)
	}
}

func equalSets(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// TestOpenAPI holds the Go types to openapi.yaml: the same JSON properties (embedded
// structs included), no required property left out when empty, the same basic types,
// and enums equal to the Go constants.
func TestOpenAPI(t *testing.T) {
	s := loadSpec(t)
	for name, node := range s.schemas {
		if typ, ok := enumSchemas[name]; ok {
			sch, err := s.resolve(node)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			s.compareEnum(t, name, sch, enumValues[typ])
			continue
		}
		if freeSchemas[name] {
			continue
		}
		typ, ok := schemaTypes[name]
		if !ok {
			t.Errorf("schema %s has no Go type in schemaTypes", name)
			continue
		}
		s.compare(t, name, node, typ)
	}
	for name := range schemaTypes {
		if _, ok := s.schemas[name]; !ok {
			t.Errorf("schemaTypes names %s, which openapi.yaml does not describe", name)
		}
	}
}

// TestOpenAPIRefs checks that every $ref of the description names a schema.
func TestOpenAPIRefs(t *testing.T) {
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := loadSpec(t)
	for _, line := range strings.Split(string(data), "\n") {
		for _, part := range strings.Split(line, "#/components/schemas/")[1:] {
			name := strings.FieldsFunc(part, func(r rune) bool { return r == '"' || r == '}' || r == ' ' })[0]
			if _, ok := s.schemas[name]; !ok {
				t.Errorf("$ref to a missing schema %q", name)
			}
		}
	}
}

// TestOpenAPIJobErrorCodes: a job's error_code is a code of protocol/errors.json; the
// description gives their shape (an agent newer than the coordinator may send a code it
// does not know), and every code of the table must fit it.
func TestOpenAPIJobErrorCodes(t *testing.T) {
	s := loadSpec(t)
	job, err := s.resolve(s.schemas["Job"])
	if err != nil {
		t.Fatal(err)
	}
	props, _ := job["properties"].(map[string]any)
	code, _ := props["error_code"].(map[string]any)
	pattern, _ := code["pattern"].(string)
	maxLen, _ := code["maxLength"].(int)
	re, err := regexp.Compile(pattern)
	if err != nil || pattern == "" || maxLen == 0 {
		t.Fatalf("Job.error_code: pattern %q (%v), maxLength %v", pattern, err, code["maxLength"])
	}
	for _, c := range protocol.ErrorCodes() {
		if !re.MatchString(string(c.Code)) || len(c.Code) > maxLen {
			t.Errorf("error code %q of protocol/errors.json does not fit Job.error_code (pattern %s, maxLength %d)", c.Code, pattern, maxLen)
		}
	}
	for _, bad := range []string{"", "Token.Locked", "token.", "1st", "token..pin"} {
		if re.MatchString(bad) {
			t.Errorf("Job.error_code's pattern takes %q", bad)
		}
	}
}

// TestOpenAPIOperations: every operation has a unique operationId, a summary and a
// success response, and lists its error statuses: those of authenticated operations
// include 401.
func TestOpenAPIOperations(t *testing.T) {
	s := loadSpec(t)
	paths, _ := s.doc["paths"].(map[string]any)
	if len(paths) == 0 {
		t.Fatal("openapi.yaml has no paths")
	}
	ids := map[string]string{}
	for path, item := range paths {
		ops, _ := item.(map[string]any)
		for method, op := range ops {
			o, ok := op.(map[string]any)
			if !ok || !slices.Contains([]string{"get", "put", "post", "delete", "patch"}, method) {
				continue
			}
			where := strings.ToUpper(method) + " " + path
			id, _ := o["operationId"].(string)
			switch {
			case id == "":
				t.Errorf("%s: no operationId", where)
			case ids[id] != "":
				t.Errorf("%s: operationId %s is also %s's", where, id, ids[id])
			}
			ids[id] = where
			if o["summary"] == nil {
				t.Errorf("%s: no summary", where)
			}
			responses, _ := o["responses"].(map[string]any)
			if _, ok := responses["default"]; ok {
				t.Errorf("%s: a default response; list the statuses the operation answers with", where)
			}
			success := false
			for status := range responses {
				success = success || strings.HasPrefix(status, "2")
			}
			if !success {
				t.Errorf("%s: no success response", where)
			}
			security, public := o["security"].([]any)
			if _, ok := responses["401"]; (!public || len(security) > 0) && !ok {
				t.Errorf("%s: authenticated, but no 401 response", where)
			}
		}
	}
}
