package service

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// JobErrTargetUnavailable is the error code of a rollout's job whose target could no
// longer take a job when its turn came (agent removed or disabled, holder disabled, token
// now another holder's...): the job is created failed, so that the target shows in the
// progress and counts as refused for the brake.
const JobErrTargetUnavailable = "target_unavailable"

// DefaultRolloutExpiry is how long a rollout waits for its approval when its profile sets
// no approval expiry.
const DefaultRolloutExpiry = 7 * 24 * time.Hour

// Rollout sizes.
const (
	// rolloutJobBatch bounds the jobs one engine transaction creates.
	rolloutJobBatch = 200
	// rolloutCancelBatch bounds the jobs one abort transaction cancels.
	rolloutCancelBatch = 300
	// previewFirst and previewSkipped bound the lists of a preview.
	previewFirst   = 20
	previewSkipped = 20
	// rolloutRateSpan is the span the rate and the ETA of a rollout are measured over.
	rolloutRateSpan = 10 * time.Minute
)

// RolloutRequest asks for a rollout (or only its preview, DryRun).
type RolloutRequest struct {
	Spec   rollout.Spec
	DryRun bool
	// IdempotencyKey, when set, names this request as for jobs (JobRequest): the same key
	// and request from the same user again returns the rollout created the first time
	// (RolloutView.Replayed), and the key with another request is refused. A dry run
	// neither uses nor takes a key.
	IdempotencyKey string
}

// RolloutGroup is how many targets share a key (an organisation, an agent state, a token
// model).
type RolloutGroup struct {
	Key   string
	Count int
}

// RolloutPreview is what a selector found: the targets grouped, the waves, the first
// targets, and what was found but cannot be a target. For a standing rollout it is what
// the first engine pass would add: the certificates inside their renewal window now.
type RolloutPreview struct {
	Targets                                    int
	ByOrganization, ByAgentState, ByTokenModel []RolloutGroup // by count, largest first
	WaveSizes                                  []int
	First                                      []RolloutTargetView // the first 20
	Skipped                                    []RolloutSkip       // the first 20 found that cannot be targets, with why
	SkippedCount                               int
}

// RolloutSkip is a candidate the selector found that cannot be a target, and why.
type RolloutSkip struct {
	AgentID, TokenSerial, CertificateSerial, Reason string
}

// RolloutTargetView is one target with its job's progress.
type RolloutTargetView struct {
	Seq, Wave                                                                           int
	AgentID, Hostname, TokenSerial, TokenModel, Holder, Organization, CertificateSerial string
	JobID                                                                               string
	JobState                                                                            jobs.State
	Outcome                                                                             rollout.Outcome
	ErrorCode, ErrorMessage                                                             string
}

// RolloutWaveView is one wave's progress; wave 0 is the canary.
type RolloutWaveView struct {
	Wave              int
	Name              string // "canary", "wave 1"...
	Size              int
	Tally             rollout.Tally
	Started, Finished bool
}

// RolloutView is a rollout with its progress.
type RolloutView struct {
	ID          string
	Name        string
	State       rollout.State
	Spec        rollout.Spec
	Standing    bool
	BindingHash string
	TargetCount int
	CreatedBy   string // username
	Created     time.Time
	Updated     time.Time
	ApprovedAt  time.Time
	// Approvals of Required are the valid approvals of the current round (the rollout's
	// own, or those resuming it after its last brake trip), by Approvers (usernames).
	Approvals   int
	Required    int
	Approvers   []string
	CurrentWave int
	Waves       []RolloutWaveView
	Overall     rollout.Tally
	PauseKind   rollout.PauseKind
	PauseReason string
	PausedBy    string // username, or the component ("system:brake")
	PausedAt    time.Time
	PauseRound  int
	Trip        *rollout.Trip // the last brake trip; nil when it never tripped
	// Waiting says why a running rollout creates no job now.
	Waiting       string
	RatePerMinute float64       // jobs ended per minute over the last 10 minutes
	ETA           time.Duration // 0: unknown
	FinishedAt    time.Time
	Preview       *RolloutPreview // on create and dry run
	// Replayed: CreateRollout found the rollout its idempotency key had created, and
	// created nothing (the view then has no preview).
	Replayed bool
}

// specError turns the rollout package's validation errors into a bad_request naming the
// first field ("spec.plan.waves[1]") and saying every problem.
func specError(err error) error {
	var fe *rollout.FieldError
	field := "spec"
	if errors.As(err, &fe) {
		field = "spec." + fe.Field
	}
	return &Error{Code: CodeBadRequest, Field: field, Msg: oneLine(err.Error()), Err: err}
}

// rolloutActor names a rollout as the actor of what its engine does to jobs.
func rolloutActor(id string) string { return "rollout:" + id }

// rolloutApproval is the change that approves a rollout's job: the rollout's approval,
// bound to its hash, is the job's request approval.
func rolloutApproval(r store.Rollout) store.JobChange {
	return store.JobChange{Actor: rolloutActor(r.ID),
		Reason: fmt.Sprintf("approved by rollout %s (%s), binding %s…", r.Name, r.ID, shortHash(r.BindingHash))}
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// decodeSpec reads a stored rollout's spec.
func decodeSpec(r store.Rollout) (rollout.Spec, error) {
	var s rollout.Spec
	if err := json.Unmarshal(r.Spec, &s); err != nil {
		return rollout.Spec{}, fmt.Errorf("rollout %s: stored spec: %w", r.ID, err)
	}
	return s, nil
}

// CreateRollout previews a rollout (DryRun) or stores it, waiting for its approval. The
// spec is normalised and validated, the profile's hash is filled in, the selector is
// resolved into a frozen, ordered target list with waves assigned, and the binding hash
// covers both.
func (s *Service) CreateRollout(ctx context.Context, by Actor, req RolloutRequest) (RolloutView, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "create rollout", jobs.PermManageRollouts, ""); err != nil {
		return RolloutView{}, err
	}
	if err := checkIdempotencyKey(req.IdempotencyKey); err != nil {
		return RolloutView{}, err
	}
	spec := req.Spec
	spec.Normalize()
	key, reqHash := req.IdempotencyKey, ""
	if req.DryRun {
		key = "" // a dry run creates nothing to find again
	}
	if key != "" {
		// A repeat is answered before the request is judged again: a profile edited or an
		// agent gone since must not turn it into an error, nor into a second rollout.
		reqHash = rolloutRequestHash(spec)
		if prior, ok, err := priorRollout(ctx, s.st, actor.ID, key, reqHash); err != nil {
			return RolloutView{}, AsError(err)
		} else if ok {
			return s.replayedRollout(ctx, prior)
		}
	}
	if err := spec.Validate(); err != nil {
		return RolloutView{}, specError(err)
	}
	if d := time.Duration(spec.Template.Deadline); d > MaxJobDeadline {
		return RolloutView{}, badRequest("spec.template.deadline", "%s: a job's deadline is at most %s after its creation, as for any job; write less, e.g. 14d",
			spec.Template.Deadline, rollout.Duration(MaxJobDeadline))
	}
	if (spec.Template.Kind == jobs.KindWipe || spec.Template.Kind == jobs.KindUnblockPIN) &&
		len(spec.Selector.Tokens.Models) == 0 && len(spec.Selector.Tokens.Firmware) == 0 {
		return RolloutView{}, badRequest("spec.selector.tokens", "a %s rollout acts on tokens: name their models or firmware, so that it never picks every token of an agent by default", spec.Template.Kind)
	}
	sp, err := s.st.GetProfile(ctx, spec.Template.Profile)
	if errors.Is(err, store.ErrNotFound) {
		return RolloutView{}, badRequest("spec.template.profile", "no profile named %q", spec.Template.Profile)
	}
	if err != nil {
		return RolloutView{}, AsError(err)
	}
	p, err := s.profiles.parse(sp)
	if err != nil {
		return RolloutView{}, internal(err)
	}
	spec.Template.ProfileHash = sp.ContentHash
	if spec.Template.Kind == jobs.KindIssue && p.Register.Document == profile.DocumentRequired {
		// Each issuance cites its own document: a rollout has none to give.
		return RolloutView{}, badRequest("spec.template.profile", "profile %s requires a document for each issuance (register.document: required): request those jobs one by one with their documents", sp.Name)
	}
	if spec.Standing && p.RenewBefore <= 0 {
		return RolloutView{}, badRequest("spec.standing", "profile %s sets no renew_before: set it (e.g. renew_before: 30d) to say when a certificate enters its renewal window", sp.Name)
	}
	var tmplHolder *store.User
	if spec.Template.Holder != "" {
		u, err := s.st.GetUserByUsername(ctx, spec.Template.Holder)
		if errors.Is(err, store.ErrNotFound) {
			return RolloutView{}, badRequest("spec.template.holder", "no user named %q", spec.Template.Holder)
		}
		if err != nil {
			return RolloutView{}, AsError(err)
		}
		if u.Disabled {
			return RolloutView{}, badRequest("spec.template.holder", "user %q is disabled", u.Username)
		}
		tmplHolder = &u
	}
	now := s.clock()
	sel, err := s.newSelection(ctx, s.st, spec, tmplHolder, now)
	if err != nil {
		return RolloutView{}, err
	}
	within := time.Duration(spec.Selector.Certificates.ExpiresWithin)
	if spec.Standing {
		within = time.Duration(p.RenewBefore)
	}
	res, err := sel.resolve(ctx, within, nil)
	if err != nil {
		return RolloutView{}, err
	}
	if err := sel.checkAgentIDs(ctx); err != nil {
		return RolloutView{}, err
	}
	if len(res.targets) == 0 && !spec.Standing {
		return RolloutView{}, badRequest("spec.selector", "the selector matches no target: %s", res.skipSummary())
	}
	sizes := rollout.AssignWaves(spec.Plan, res.targets)
	if len(sizes)-1 > rollout.MaxWaves {
		return RolloutView{}, badRequest("spec.plan.exponential", "makes %d waves of %d targets: at most %d; raise factor or start",
			len(sizes)-1, len(res.targets), rollout.MaxWaves)
	}
	stored := res.targets
	if spec.Standing {
		stored = nil // a standing rollout takes certificates up as they enter the window
	}
	hash := rollout.BindingHash(spec, stored)
	preview := res.preview(ctx, sizes)
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return RolloutView{}, internal(err)
	}
	r := store.Rollout{Name: spec.Name, State: string(rollout.StatePendingApproval), Spec: specJSON, Standing: spec.Standing,
		ProfileName: sp.Name, BindingHash: hash, TargetCount: len(stored), CreatedBy: actor.ID, Created: now, Updated: now,
		IdempotencyKey: key, RequestHash: reqHash}
	if req.DryRun {
		v, err := s.rolloutView(ctx, s.st, newNames(s.st), r, false)
		if err != nil {
			return RolloutView{}, err
		}
		v.Preview = &preview
		return v, nil
	}
	targets := make([]store.RolloutTarget, len(stored))
	for i, t := range stored {
		targets[i] = store.RolloutTarget{Seq: t.Seq, Wave: t.Wave, AgentID: t.AgentID, TokenSerial: t.TokenSerial, HolderID: t.HolderID,
			CertificateSerial: t.CertificateSerial, TokenModel: t.TokenModel, OrganizationID: t.OrganizationID, Added: now}
	}
	var (
		out               store.Rollout
		replayed, retried bool
	)
	err = s.update(ctx, func(t *txn) error {
		replayed = false
		if key != "" {
			// A request with the same key may have committed since the look above.
			prior, ok, err := priorRollout(ctx, t, actor.ID, key, reqHash)
			if err != nil {
				return err
			}
			if ok {
				out, replayed = prior, true
				return nil
			}
		}
		var err error
		out, err = t.CreateRollout(ctx, r, targets)
		if key != "" && !retried && errors.Is(err, store.ErrConflict) {
			// A concurrent request with the same key took it first (the unique index):
			// run again, once, and the look above finds its rollout. (Another conflict,
			// such as a second standing rollout of the profile, comes back the same.)
			retried = true
			return retryable{err}
		}
		if err != nil {
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionRolloutCreated, Target: "rollout:" + out.ID,
			Reason: fmt.Sprintf("created by %s with %d targets; it waits for its approval", actor.Username, len(targets)),
			Details: audit.Details("name", out.Name, "kind", string(spec.Template.Kind), "profile", sp.Name, "profile_hash", sp.ContentHash,
				"targets", len(targets), "binding_hash", hash, "wave_sizes", sizes, "standing", spec.Standing,
				"skipped", res.skippedCount)})
	})
	if err != nil {
		return RolloutView{}, err
	}
	if replayed {
		return s.replayedRollout(ctx, out)
	}
	v, err := s.rolloutView(ctx, s.st, newNames(s.st), out, true)
	if err != nil {
		return RolloutView{}, err
	}
	v.Preview = &preview
	return v, nil
}

// rolloutRequestHash identifies a rollout creation request as its creator sent it
// (normalised: the spec's defaults filled in), so that a key used again with another
// request is told apart from a repeat.
func rolloutRequestHash(spec rollout.Spec) string {
	b, err := json.Marshal(spec)
	if err != nil {
		panic(err) // plain values only: cannot fail
	}
	sum := sha256.Sum256(append([]byte("tokenfleet/rollout-request/v1\n"), b...))
	return hex.EncodeToString(sum[:])
}

// priorRollout returns the rollout user created with key, when there is one: ok is false
// when the key is unused, and an idempotency_key_reused error when it named another
// request.
func priorRollout(ctx context.Context, r store.Reader, userID, key, hash string) (store.Rollout, bool, error) {
	ro, err := r.GetRolloutByIdempotencyKey(ctx, userID, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Rollout{}, false, nil
	case err != nil:
		return store.Rollout{}, false, err
	case ro.RequestHash != hash:
		return store.Rollout{}, false, newErr(CodeIdempotencyKeyReused, IdempotencyKeyField,
			"key %q was used for another request (rollout %s); send a new key for a new request", key, ro.ID)
	}
	return ro, true, nil
}

// replayedRollout is the view of a rollout an idempotency key had created, as a repeat
// returns it: as it is now, without a preview.
func (s *Service) replayedRollout(ctx context.Context, ro store.Rollout) (RolloutView, error) {
	v, err := s.rolloutView(ctx, s.st, newNames(s.st), ro, true)
	v.Replayed = true
	return v, err
}

// selAgent is what a selection keeps of an agent.
type selAgent struct {
	ID, Hostname, OrganizationID string
	State                        store.AgentState
	Tags                         []string
}

// selToken is what a selection keeps of a token.
type selToken struct {
	Serial, AgentID, Model, Firmware string
}

// selUser is what a selection keeps of a holder.
type selUser struct {
	ID, Username, OrganizationID string
	Disabled, Missing            bool
}

// selection resolves a spec's selector against the store. Agents and tokens are loaded
// whole for a rollout's creation (one pass each, kept small), or looked up one by one for
// a standing rollout's pass, which meets only the few certificates entering their window.
type selection struct {
	s     *Service
	r     store.Reader
	spec  rollout.Spec
	now   time.Time
	tmpl  *store.User
	orgs  map[string]string // organisation ID → name, every one
	agOrg map[string]bool   // selector.agents.organizations as IDs; nil: any
	hoOrg map[string]bool   // selector.holders.organizations as IDs; nil: any
	agIDs map[string]bool   // selector.agents.ids; nil: any

	bulk   bool
	agents map[string]*selAgent // bulk: every agent; else a cache of lookups (nil: unknown)
	tokens map[string]*selToken
	byAg   map[string][]string // bulk: token serials by agent, sorted
	users  map[string]selUser
}

// newSelection checks the selector's names against the store.
func (s *Service) newSelection(ctx context.Context, r store.Reader, spec rollout.Spec, tmpl *store.User, now time.Time) (*selection, error) {
	sel := &selection{s: s, r: r, spec: spec, now: now, tmpl: tmpl, orgs: map[string]string{},
		agents: map[string]*selAgent{}, tokens: map[string]*selToken{}, users: map[string]selUser{}}
	p := store.Page{Limit: store.MaxPageLimit}
	byName := map[string]string{}
	for {
		os, next, err := r.ListOrganizations(ctx, p)
		if err != nil {
			return nil, AsError(err)
		}
		for _, o := range os {
			sel.orgs[o.ID] = o.Name
			byName[strings.ToLower(o.Name)] = o.ID
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	orgSet := func(field string, names []string) (map[string]bool, error) {
		if len(names) == 0 {
			return nil, nil
		}
		out := map[string]bool{}
		for i, n := range names {
			id, ok := byName[strings.ToLower(strings.TrimSpace(n))]
			if !ok {
				return nil, badRequest(fmt.Sprintf("%s[%d]", field, i), "no organisation named %q", n)
			}
			out[id] = true
		}
		return out, nil
	}
	var err error
	if sel.agOrg, err = orgSet("spec.selector.agents.organizations", spec.Selector.Agents.Organizations); err != nil {
		return nil, err
	}
	if sel.hoOrg, err = orgSet("spec.selector.holders.organizations", spec.Selector.Holders.Organizations); err != nil {
		return nil, err
	}
	if len(spec.Selector.Agents.IDs) > 0 {
		sel.agIDs = make(map[string]bool, len(spec.Selector.Agents.IDs))
		for _, id := range spec.Selector.Agents.IDs {
			sel.agIDs[id] = true
		}
	}
	return sel, nil
}

// loadFleet reads every agent and token once (a rollout's creation).
func (sel *selection) loadFleet(ctx context.Context) error {
	sel.bulk = true
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		as, next, err := sel.r.ListAgents(ctx, store.AgentFilter{}, p)
		if err != nil {
			return AsError(err)
		}
		for _, a := range as {
			sel.agents[a.ID] = agentSel(a)
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	sel.byAg = map[string][]string{}
	p = store.Page{Limit: store.MaxPageLimit}
	for {
		ts, next, err := sel.r.ListTokens(ctx, store.TokenFilter{}, p)
		if err != nil {
			return AsError(err)
		}
		for _, t := range ts {
			sel.tokens[t.Serial] = &selToken{Serial: t.Serial, AgentID: t.AgentID, Model: t.Model, Firmware: t.Firmware}
			if t.AgentID != "" {
				sel.byAg[t.AgentID] = append(sel.byAg[t.AgentID], t.Serial) // listed by serial
			}
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	return nil
}

// checkAgentIDs refuses an agent ID the selector names that no agent has: a typo would
// otherwise leave that workstation out without a word.
func (sel *selection) checkAgentIDs(ctx context.Context) error {
	for i, id := range sel.spec.Selector.Agents.IDs {
		a, err := sel.agent(ctx, id)
		if err != nil {
			return err
		}
		if a == nil {
			return badRequest(fmt.Sprintf("spec.selector.agents.ids[%d]", i), "no agent %q is enrolled: correct the ID or remove it (tokenfleetctl agents lists them)", id)
		}
	}
	return nil
}

func agentSel(a store.Agent) *selAgent {
	return &selAgent{ID: a.ID, Hostname: a.Hostname, OrganizationID: a.OrganizationID, State: a.State, Tags: a.Tags}
}

func (sel *selection) agent(ctx context.Context, id string) (*selAgent, error) {
	if a, ok := sel.agents[id]; ok || sel.bulk {
		return a, nil
	}
	a, err := sel.r.GetAgent(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		sel.agents[id] = nil
		return nil, nil
	}
	if err != nil {
		return nil, AsError(err)
	}
	sel.agents[id] = agentSel(a)
	return sel.agents[id], nil
}

func (sel *selection) token(ctx context.Context, serial string) (*selToken, error) {
	if serial == "" {
		return nil, nil
	}
	if t, ok := sel.tokens[serial]; ok || sel.bulk {
		return t, nil
	}
	t, err := sel.r.GetToken(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		sel.tokens[serial] = nil
		return nil, nil
	}
	if err != nil {
		return nil, AsError(err)
	}
	sel.tokens[serial] = &selToken{Serial: t.Serial, AgentID: t.AgentID, Model: t.Model, Firmware: t.Firmware}
	return sel.tokens[serial], nil
}

func (sel *selection) user(ctx context.Context, id string) (selUser, error) {
	if u, ok := sel.users[id]; ok {
		return u, nil
	}
	u, err := sel.r.GetUser(ctx, id)
	var v selUser
	switch {
	case errors.Is(err, store.ErrNotFound):
		v = selUser{ID: id, Username: id, Missing: true}
	case err != nil:
		return selUser{}, AsError(err)
	default:
		v = selUser{ID: u.ID, Username: u.Username, OrganizationID: u.OrganizationID, Disabled: u.Disabled}
	}
	sel.users[id] = v
	return v, nil
}

// agentMatch reports whether the agent passes the selector's agent filters, and when it
// passes every one but the states, why it is skipped.
func (sel *selection) agentMatch(a *selAgent) (bool, string) {
	as := sel.spec.Selector.Agents
	if a == nil {
		return false, ""
	}
	if sel.agOrg != nil && !sel.agOrg[a.OrganizationID] {
		return false, ""
	}
	for _, t := range as.Tags {
		if !slices.Contains(a.Tags, t) {
			return false, ""
		}
	}
	if as.HostPattern != "" {
		if ok, _ := matchHost(as.HostPattern, a.Hostname); !ok {
			return false, ""
		}
	}
	if sel.agIDs != nil && !sel.agIDs[a.ID] {
		return false, ""
	}
	states := as.States
	if len(states) == 0 {
		states = []string{rollout.DefaultAgentState}
	}
	if !slices.Contains(states, string(a.State)) {
		return false, fmt.Sprintf("agent %s is %s (selector.agents.states: %s)", a.ID, a.State, strings.Join(states, ", "))
	}
	return true, ""
}

// tokenMatch reports whether a token passes the selector's token filters (nil: a target
// without a known token passes only when no token filter is given).
func (sel *selection) tokenMatch(t *selToken) bool {
	ts := sel.spec.Selector.Tokens
	if len(ts.Models) == 0 && len(ts.Firmware) == 0 {
		return true
	}
	if t == nil {
		return false
	}
	if len(ts.Models) > 0 && !slices.ContainsFunc(ts.Models, func(m string) bool { return strings.EqualFold(m, t.Model) }) {
		return false
	}
	return len(ts.Firmware) == 0 || slices.Contains(ts.Firmware, t.Firmware)
}

// renewalLoop is the skip reason of a certificate a standing rollout leaves out because
// it was issued inside its own renewal window.
const renewalLoop = "issued inside its renewal window"

// candidate is a target as a selection found it, with what the preview shows.
type candidate struct {
	t          rollout.Target
	hostname   string
	agentState store.AgentState
	holder     string // username
}

// resolution is what a selection found.
type resolution struct {
	sel          *selection
	targets      []rollout.Target
	extra        map[int]candidate // by index in targets, for the preview's first targets
	byOrg        map[string]int
	byState      map[string]int
	byModel      map[string]int
	skipped      []RolloutSkip
	skippedCount int
	reasons      map[string]int // skip reasons, their variable part cut
}

func (res *resolution) skip(agent, token, cert, reason, kind string) {
	res.skippedCount++
	res.reasons[kind]++
	if len(res.skipped) < previewSkipped {
		res.skipped = append(res.skipped, RolloutSkip{AgentID: agent, TokenSerial: token, CertificateSerial: cert, Reason: reason})
	}
}

func (res *resolution) add(c candidate) {
	c.t.Seq = len(res.targets) + 1
	if len(res.targets) < previewFirst {
		res.extra[len(res.targets)] = c
	}
	res.targets = append(res.targets, c.t)
	res.byOrg[res.sel.orgs[c.t.OrganizationID]]++
	res.byState[string(c.agentState)]++
	res.byModel[c.t.TokenModel]++
}

// skipSummary says why nothing matched, for the refusal of an empty rollout.
func (res *resolution) skipSummary() string {
	if res.skippedCount == 0 {
		return "nothing it names exists (check the organisations, tags, host pattern, states, token models, certificate profile and expiry window)"
	}
	keys := slices.Collect(maps.Keys(res.reasons))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(res.reasons[b], res.reasons[a]), cmp.Compare(a, b)) })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", res.reasons[k], k))
	}
	return fmt.Sprintf("%d candidates skipped: %s", res.skippedCount, strings.Join(parts, ", "))
}

// resolve finds the targets. within bounds the time to expiry of renewed certificates (0:
// any). have, when set, tells a certificate that already is a target (a standing
// rollout's pass), which is passed over without a word.
func (sel *selection) resolve(ctx context.Context, within time.Duration, have func(serial string) (bool, error)) (*resolution, error) {
	res := &resolution{sel: sel, extra: map[int]candidate{}, byOrg: map[string]int{}, byState: map[string]int{},
		byModel: map[string]int{}, reasons: map[string]int{}}
	if !sel.spec.Standing {
		if err := sel.loadFleet(ctx); err != nil {
			return nil, err
		}
	}
	var err error
	switch sel.spec.Template.Kind {
	case jobs.KindRenew, jobs.KindInstallCertificate:
		err = sel.byCertificates(ctx, res, within, have)
	default:
		err = sel.byAgents(ctx, res)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// holderFor checks a resolved holder: known, enabled, of a selected organisation. It
// returns the user, or why the candidate is skipped ("" with ok false: not selected).
func (sel *selection) holderFor(ctx context.Context, id string) (selUser, bool, string, error) {
	u, err := sel.user(ctx, id)
	if err != nil {
		return selUser{}, false, "", err
	}
	switch {
	case u.Missing:
		return u, false, fmt.Sprintf("holder %s no longer exists", id), nil
	case u.Disabled:
		return u, false, fmt.Sprintf("holder %s is disabled", u.Username), nil
	case sel.hoOrg != nil && !sel.hoOrg[u.OrganizationID]:
		return u, false, "", nil
	}
	return u, true, "", nil
}

// byCertificates finds renewals: the valid certificates of the selector's profile, the
// newest of each holder and token, whose agent, token and holder pass the filters.
func (sel *selection) byCertificates(ctx context.Context, res *resolution, within time.Duration, have func(string) (bool, error)) error {
	certProfile := sel.spec.Selector.Certificates.Profile
	if certProfile == "" {
		certProfile = sel.spec.Template.Profile
	}
	valid := false
	newest := map[[3]string]string{} // holder, token (agent without one) → the newest certificate's serial
	var found []candidate
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		cs, next, err := sel.r.ListCertificates(ctx, store.CertificateFilter{Revoked: &valid}, p)
		if err != nil {
			return AsError(err)
		}
		for _, c := range cs {
			if c.Profile != certProfile {
				continue
			}
			// By token, wherever it was: a token renewed after it moved to another
			// workstation has its new certificate under the other agent.
			key := [3]string{c.HolderID, c.TokenSerial, ""}
			if c.TokenSerial == "" {
				key[2] = c.AgentID
			}
			newer, superseded := newest[key]
			if !superseded {
				newest[key] = c.Serial
			}
			if within > 0 && c.NotAfter.Sub(sel.now) > within {
				continue
			}
			tok, err := sel.token(ctx, c.TokenSerial)
			if err != nil {
				return err
			}
			agentID := c.AgentID
			if tok != nil && tok.AgentID != "" {
				agentID = tok.AgentID // the token moved: its renewal goes where it is now
			}
			a, err := sel.agent(ctx, agentID)
			if err != nil {
				return err
			}
			ok, why := sel.agentMatch(a)
			if !ok {
				if why != "" {
					res.skip(agentID, c.TokenSerial, c.Serial, why, "agent not in the selected states")
				}
				continue
			}
			if !sel.tokenMatch(tok) {
				continue
			}
			if superseded {
				res.skip(agentID, c.TokenSerial, c.Serial, fmt.Sprintf("superseded by certificate %s of the same holder and token", newer), "superseded by a newer certificate")
				continue
			}
			if have != nil {
				if in, err := have(c.Serial); err != nil {
					return err
				} else if in {
					continue
				}
			}
			if life := c.NotAfter.Sub(c.NotBefore); sel.spec.Standing && life <= within {
				// Issued already inside its window (a CA certificate expiring first cuts
				// the validity): its renewal would be as short, and due at once, again
				// and again.
				res.skip(agentID, c.TokenSerial, c.Serial, fmt.Sprintf("certificate %s was issued for %s, no more than renew_before (%s): its renewal would be due again at once; renew the issuing CA's certificate, or renew this one by a job of its own",
					c.Serial, profile.Duration(life), profile.Duration(within)), renewalLoop)
				continue
			}
			u, ok, why, err := sel.holderFor(ctx, c.HolderID)
			if err != nil {
				return err
			}
			if !ok {
				if why != "" {
					res.skip(agentID, c.TokenSerial, c.Serial, why, "holder unusable")
				}
				continue
			}
			model := ""
			if tok != nil {
				model = tok.Model
			}
			found = append(found, candidate{t: rollout.Target{AgentID: agentID, TokenSerial: c.TokenSerial, HolderID: u.ID,
				CertificateSerial: c.Serial, TokenModel: model, OrganizationID: u.OrganizationID},
				hostname: a.Hostname, agentState: a.State, holder: u.Username})
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	// A stable order people can read: by agent, token, certificate.
	slices.SortFunc(found, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.t.AgentID, b.t.AgentID), cmp.Compare(a.t.TokenSerial, b.t.TokenSerial),
			cmp.Compare(a.t.CertificateSerial, b.t.CertificateSerial))
	})
	for _, c := range found {
		res.add(c)
	}
	return nil
}

// byAgents finds the targets of the kinds that act on agents and tokens: one per matching
// token the agent last reported when tokens are selected, else one per agent. The holder
// is that of the newest valid certificate on the token (or the agent), else the
// template's.
func (sel *selection) byAgents(ctx context.Context, res *resolution) error {
	perToken := len(sel.spec.Selector.Tokens.Models) > 0 || len(sel.spec.Selector.Tokens.Firmware) > 0
	type slot struct {
		agent *selAgent
		token *selToken
	}
	var slots []slot
	ids := slices.Sorted(maps.Keys(sel.agents))
	for _, id := range ids {
		a := sel.agents[id]
		ok, why := sel.agentMatch(a)
		if !ok {
			if why != "" {
				res.skip(a.ID, "", "", why, "agent not in the selected states")
			}
			continue
		}
		if !perToken {
			slots = append(slots, slot{agent: a})
			continue
		}
		for _, serial := range sel.byAg[a.ID] {
			if t := sel.tokens[serial]; sel.tokenMatch(t) {
				slots = append(slots, slot{agent: a, token: t})
			}
		}
	}
	// The holder of the newest valid certificate on each slot's token or agent: one pass
	// over the valid certificates, newest first, keeping only the keys the slots need.
	needTok, needAg := map[string]string{}, map[string]string{}
	for _, sl := range slots {
		if sl.token != nil {
			needTok[sl.token.Serial] = ""
		} else {
			needAg[sl.agent.ID] = ""
		}
	}
	valid := false
	p := store.Page{Limit: store.MaxPageLimit}
	for len(slots) > 0 {
		cs, next, err := sel.r.ListCertificates(ctx, store.CertificateFilter{Revoked: &valid}, p)
		if err != nil {
			return AsError(err)
		}
		for _, c := range cs {
			if h, ok := needTok[c.TokenSerial]; ok && h == "" && c.TokenSerial != "" {
				needTok[c.TokenSerial] = c.HolderID
			}
			if h, ok := needAg[c.AgentID]; ok && h == "" {
				needAg[c.AgentID] = c.HolderID
			}
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	for _, sl := range slots {
		holderID, serial, model := "", "", ""
		if sl.token != nil {
			holderID, serial, model = needTok[sl.token.Serial], sl.token.Serial, sl.token.Model
		} else {
			holderID = needAg[sl.agent.ID]
		}
		if holderID == "" && sel.tmpl != nil {
			holderID = sel.tmpl.ID
		}
		if holderID == "" {
			res.skip(sl.agent.ID, serial, "", "no holder: no valid certificate names one; give template.holder", "without a holder")
			continue
		}
		u, ok, why, err := sel.holderFor(ctx, holderID)
		if err != nil {
			return err
		}
		if !ok {
			if why != "" {
				res.skip(sl.agent.ID, serial, "", why, "holder unusable")
			}
			continue
		}
		res.add(candidate{t: rollout.Target{AgentID: sl.agent.ID, TokenSerial: serial, HolderID: u.ID, TokenModel: model,
			OrganizationID: u.OrganizationID}, hostname: sl.agent.Hostname, agentState: sl.agent.State, holder: u.Username})
	}
	return nil
}

// preview builds what a create or a dry run shows.
func (res *resolution) preview(ctx context.Context, sizes []int) RolloutPreview {
	groups := func(m map[string]int) []RolloutGroup {
		out := make([]RolloutGroup, 0, len(m))
		for k, n := range m {
			out = append(out, RolloutGroup{Key: k, Count: n})
		}
		slices.SortFunc(out, func(a, b RolloutGroup) int { return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Key, b.Key)) })
		return out
	}
	pv := RolloutPreview{Targets: len(res.targets), ByOrganization: groups(res.byOrg), ByAgentState: groups(res.byState),
		ByTokenModel: groups(res.byModel), WaveSizes: sizes, First: []RolloutTargetView{}, Skipped: res.skipped,
		SkippedCount: res.skippedCount}
	if pv.Skipped == nil {
		pv.Skipped = []RolloutSkip{}
	}
	if pv.WaveSizes == nil {
		pv.WaveSizes = []int{}
	}
	for i := range min(previewFirst, len(res.targets)) {
		t, c := res.targets[i], res.extra[i]
		pv.First = append(pv.First, RolloutTargetView{Seq: t.Seq, Wave: t.Wave, AgentID: t.AgentID, Hostname: c.hostname,
			TokenSerial: t.TokenSerial, TokenModel: t.TokenModel, Holder: c.holder, Organization: res.sel.orgs[t.OrganizationID],
			CertificateSerial: t.CertificateSerial, Outcome: rollout.OutcomePending})
	}
	return pv
}

// matchHost matches a host name against a selector's glob, case-insensitively.
func matchHost(pattern, host string) (bool, error) {
	return path.Match(strings.ToLower(pattern), strings.ToLower(host))
}

// requiredApprovals is what a rollout's gate asks: the profile's approvals, at least one,
// from the profile's roles, or approver and admin when it names none.
func requiredApprovals(p profile.Profile) (int, []jobs.Role) {
	policy := p.Approval.Policy()
	n := max(policy.Required, 1)
	roles := policy.Roles
	if len(roles) == 0 {
		roles = []jobs.Role{jobs.RoleApprover, jobs.RoleAdmin}
	}
	return n, roles
}
