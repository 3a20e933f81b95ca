package service

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Notifier writes the notices a change causes into the notifications outbox, inside the
// transaction of the change (notify.Outbox implements it): a change rolled back notifies
// nobody. Wake is called once the transaction committed.
type Notifier interface {
	Write(ctx context.Context, tx notify.Tx, n notify.Notice) error
	Wake()
}

// Who hears what (the events of package notify):
//   - job.approval_requested: the people an approval would be taken from now, as
//     checkVote says (the rule deciding and the awaiting-me list apply), never the
//     requester or the holder; sent when a request is created pending.
//   - job.ca_approval_requested: the CA operators who may decide at the CA-operator gate
//     now (the administrators when nobody else may), when a job enters it; once per
//     attempt (notifyCAGate).
//   - job.decided: the requester, when the request gate approves or a gate rejects.
//   - job.succeeded, job.failed: the requester; an expired job is told as failed, its
//     error saying it expired.
//   - token.insert: the holder, when a job needing their token is dispatched to, or waits
//     at, an agent that reports no matching token; once per job attempt.
//   - rollout.brake_tripped, rollout.completed: the rollout's creator.
//   - rollout.ended: the rollout's creator, when it is rejected, expires unapproved or is
//     aborted by someone else.
//   - certificate.expiring: the holder and the help desk, once per certificate and
//     warning period (NotifyExpiringCertificates).
//   - crl.expiring: the administrators (NotifyCRL).
//
// A rollout's jobs notify nobody of their decisions and ends: their rollout does. Their
// holders are still asked to insert their tokens, and the CA operators to decide on them.

// notify writes n in the transaction; the sender is woken once it committed. A notice
// whose template fails (a bug, caught by the template tests) is logged, not allowed to
// undo the change.
func (t *txn) notify(ctx context.Context, n notify.Notice) error {
	if t.s.notifier == nil {
		return nil
	}
	if err := t.s.notifier.Write(ctx, t.Tx, n); err != nil {
		if errors.Is(err, notify.ErrRender) {
			t.s.log.Error().Err(err).Str("event", string(n.Event)).Str("key", n.Key).Msg("notification not written")
			return nil
		}
		return err
	}
	t.events = append(t.events, func(Observer) { t.s.notifier.Wake() })
	return nil
}

// notifying reports whether notices are written at all: what it costs to find their
// recipients is spared otherwise.
func (s *Service) notifying() bool { return s.notifier != nil }

// recipientOf is the notice address of a user; false for a disabled one.
func recipientOf(u store.User) (notify.Recipient, bool) {
	if u.Disabled {
		return notify.Recipient{}, false
	}
	return notify.Recipient{UserID: u.ID, Username: u.Username, Name: u.DisplayName, Email: u.Email, Language: u.Language}, true
}

// userRecipient looks a user up as a recipient; false when there is none to tell.
func (t *txn) userRecipient(ctx context.Context, id string) (notify.Recipient, bool, error) {
	if id == "" {
		return notify.Recipient{}, false, nil
	}
	u, err := t.GetUser(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return notify.Recipient{}, false, nil
	}
	if err != nil {
		return notify.Recipient{}, false, err
	}
	r, ok := recipientOf(u)
	return r, ok, nil
}

// usersWithRole lists the enabled users holding role.
func usersWithRole(ctx context.Context, r store.Reader, role jobs.Role) ([]store.User, error) {
	enabled := false
	var out []store.User
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		us, next, err := r.ListUsers(ctx, store.UserFilter{Role: role, Disabled: &enabled}, p)
		if err != nil {
			return nil, err
		}
		out = append(out, us...)
		if next == "" {
			return out, nil
		}
		p.Cursor = next
	}
}

// jobData is the notice's view of a job.
func (t *txn) jobData(ctx context.Context, j store.Job) (*notify.Job, error) {
	d := &notify.Job{ID: j.ID, Kind: string(j.Kind), State: string(j.State), Attempt: j.Attempt, Profile: j.ProfileName,
		Agent: j.AgentID, TokenSerial: j.TokenSerial, Deadline: j.Deadline, Rollout: j.RolloutID}
	if j.HolderID != "" {
		u, err := t.GetUser(ctx, j.HolderID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		d.Holder, d.HolderName = u.Username, u.DisplayName
	}
	n := newNames(t)
	d.Requester = n.user(ctx, j.RequesterID)
	d.Organization = n.org(ctx, j.OrganizationID)
	if j.AgentID != "" {
		a, err := t.GetAgent(ctx, j.AgentID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		d.Hostname = a.Hostname
	}
	return d, nil
}

// notifyApprovalRequested tells the people who may approve a request that it waits for
// them.
func (t *txn) notifyApprovalRequested(ctx context.Context, j store.Job, p profile.Profile) error {
	if !t.s.notifying() || j.State != jobs.StatePendingApproval {
		return nil
	}
	to, err := t.deciders(ctx, j, p.Approval.Policy().Roles)
	if err != nil {
		return err
	}
	if len(to) == 0 {
		t.s.log.Warn().Str("job", j.ID).Msg("nobody may approve this request now: no approval notice sent")
	}
	return t.notifyAwaiting(ctx, j, p, notify.EventApprovalRequested, j.ID, to)
}

// notifyCAGate tells the CA operators who may decide now that a job waits at the
// CA-operator gate, its CSR accepted, before its certificate is signed: the holders of the
// ca_operator role or of a custom role granting its permission, as checkVote says (scope;
// never the requester, the holder, nor whoever passed the request gate). The
// administrators, whose role grants every permission, are told only when nobody else may
// decide, so that a gate never waits unseen. Written once per job attempt; a rollout's
// jobs too, since each needs its own decision (the rate limit gathers a flood into
// digests).
func (t *txn) notifyCAGate(ctx context.Context, j store.Job) error {
	// A server_keygen job waits for the CA operator once approved: its key and
	// certificate are made when its dispatch is built.
	gate := j.State == jobs.StateAwaitingCertificate || (j.Kind == jobs.KindServerKeygen && j.State == jobs.StateApproved)
	if !t.s.notifying() || !gate {
		return nil
	}
	p, _, err := t.s.profileOfJob(ctx, t, j)
	if err != nil {
		return err
	}
	if !p.Approval.CAOperatorRequired {
		return nil
	}
	roles := []jobs.Role{jobs.RoleCAOperator}
	custom, err := t.ListCustomRoles(ctx)
	if err != nil {
		return err
	}
	for _, c := range custom {
		if slices.Contains(c.Permissions, jobs.PermCAOperator) {
			roles = append(roles, jobs.Role(c.Name))
		}
	}
	to, err := t.deciders(ctx, j, roles)
	if err == nil && len(to) == 0 {
		to, err = t.deciders(ctx, j, []jobs.Role{jobs.RoleAdmin})
	}
	if err != nil {
		return err
	}
	if len(to) == 0 {
		t.s.log.Warn().Str("job", j.ID).Msg("nobody may decide at the CA-operator gate now: no notice sent")
	}
	return t.notifyAwaiting(ctx, j, p, notify.EventCAApprovalRequested, j.ID+":"+strconv.Itoa(j.Attempt), to)
}

// deciders are the enabled holders of roles whose approval of j would be taken now, as
// checkVote says: the rule deciding and the awaiting-me list apply.
func (t *txn) deciders(ctx context.Context, j store.Job, roles []jobs.Role) ([]notify.Recipient, error) {
	seen := map[string]bool{}
	var to []notify.Recipient
	for _, role := range roles {
		users, err := usersWithRole(ctx, t, role)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			if seen[u.ID] {
				continue
			}
			seen[u.ID] = true
			vc, err := t.s.checkVote(ctx, t, u, j, jobs.Vote{Verdict: jobs.VerdictApprove}, t.now)
			if err != nil {
				return nil, err
			}
			if vc.refusal != nil {
				continue
			}
			if r, ok := recipientOf(u); ok {
				to = append(to, r)
			}
		}
	}
	return to, nil
}

// notifyAwaiting writes the notice that j waits at the gate its state holds open, with
// what is to be decided on (the certificate's subject as the profile renders it) and
// until when.
func (t *txn) notifyAwaiting(ctx context.Context, j store.Job, p profile.Profile, e notify.Event, key string, to []notify.Recipient) error {
	jd, err := t.jobData(ctx, j)
	if err != nil {
		return err
	}
	if id, ok := t.s.identityOf(ctx, newNames(t), j, p); ok {
		jd.Subject = id.Subject.String()
	}
	approvals, err := t.ListApprovals(ctx, j.ID)
	if err != nil {
		return err
	}
	if o, err := jobs.Evaluate(p.Approval.Policy(), j.Rules(j.OrganizationID, approvals), t.now); err == nil && o.Status == jobs.StatusPending {
		jd.DecideBy = o.ValidUntil
	}
	return t.notify(ctx, notify.Notice{Event: e, Key: key, Data: notify.Data{Job: jd}, To: to})
}

// notifyDecided tells the requester that a gate approved or rejected their request, with
// the decisive decision's reason and approver.
func (t *txn) notifyDecided(ctx context.Context, j store.Job, gate jobs.Gate, verdict jobs.Verdict) error {
	if !t.s.notifying() || j.RolloutID != "" {
		return nil
	}
	approvals, err := t.ListApprovals(ctx, j.ID)
	if err != nil {
		return err
	}
	d := &notify.Decision{Verdict: string(verdict), Gate: string(gate)}
	for _, a := range slices.Backward(approvals) {
		if a.Gate == gate && a.Verdict == verdict {
			d.Reason, d.DecidedBy = a.Reason, newNames(t).user(ctx, a.ApproverID)
			break
		}
	}
	return t.notifyRequester(ctx, j, notify.EventJobDecided, j.ID+":"+string(gate)+":"+strconv.Itoa(j.Attempt),
		notify.Data{Decision: d})
}

// notifyJobEnded tells the requester that a job succeeded, failed or expired.
func (t *txn) notifyJobEnded(ctx context.Context, j store.Job) error {
	if !t.s.notifying() || j.RolloutID != "" {
		return nil
	}
	switch j.State {
	case jobs.StateSucceeded:
		return t.notifyRequester(ctx, j, notify.EventJobSucceeded, j.ID+":"+strconv.Itoa(j.Attempt), notify.Data{})
	case jobs.StateFailed, jobs.StateExpired:
		// An expired job was never carried out: its requester hears it as a failure whose
		// error says so, rather than waiting for a job that will not run.
		return t.notifyRequester(ctx, j, notify.EventJobFailed, j.ID+":"+strconv.Itoa(j.Attempt),
			notify.Data{Failure: &notify.Failure{Code: j.ErrorCode, Message: j.ErrorMessage}})
	}
	return nil
}

func (t *txn) notifyRequester(ctx context.Context, j store.Job, e notify.Event, key string, d notify.Data) error {
	jd, err := t.jobData(ctx, j)
	if err != nil {
		return err
	}
	d.Job = jd
	var to []notify.Recipient
	if r, ok, err := t.userRecipient(ctx, j.RequesterID); err != nil {
		return err
	} else if ok {
		to = append(to, r)
	}
	return t.notify(ctx, notify.Notice{Event: e, Key: key, Data: d, To: to})
}

// Notifying reports whether notices are written: the dispatcher spares its look at the
// agent's tokens otherwise.
func (jt *JobTx) Notifying() bool { return jt.t.s.notifying() }

// NotifyTokenNeeded tells a job's holder to insert their token at the job's workstation:
// the dispatcher calls it when it sends the job to, or leaves it waiting at, an agent that
// reports no matching token. It is written once per job attempt.
func (jt *JobTx) NotifyTokenNeeded(ctx context.Context, j store.Job, tok notify.Token) error {
	t := jt.t
	if !t.s.notifying() || j.HolderID == "" {
		return nil
	}
	jd, err := t.jobData(ctx, j)
	if err != nil {
		return err
	}
	var to []notify.Recipient
	if r, ok, err := t.userRecipient(ctx, j.HolderID); err != nil {
		return err
	} else if ok {
		to = append(to, r)
	}
	return t.notify(ctx, notify.Notice{Event: notify.EventTokenInsert, Key: j.ID + ":" + strconv.Itoa(j.Attempt),
		Data: notify.Data{Job: jd, Token: &tok}, To: to})
}

// notifyRolloutEnded tells a rollout's creator that it ended without completing
// (rejected, not approved in time, aborted), unless they ended it themselves. by is the
// user who ended it, "" for the coordinator.
func (t *txn) notifyRolloutEnded(ctx context.Context, r store.Rollout, spec rollout.Spec, by, reason string) error {
	if !t.s.notifying() || (by != "" && by == r.CreatedBy) {
		return nil
	}
	st, err := statusOf(ctx, t, r, spec, t.now)
	if err != nil {
		return err
	}
	return t.notifyRollout(ctx, notify.EventRolloutEnded, r, st.overall, reason, newNames(t).user(ctx, by))
}

// notifyRollout tells a rollout's creator that its brake tripped, it completed, or it
// ended otherwise (by: who ended it).
func (t *txn) notifyRollout(ctx context.Context, e notify.Event, r store.Rollout, tally rollout.Tally, summary, by string) error {
	if !t.s.notifying() {
		return nil
	}
	var to []notify.Recipient
	if rc, ok, err := t.userRecipient(ctx, r.CreatedBy); err != nil {
		return err
	} else if ok {
		to = append(to, rc)
	}
	key := r.ID
	if e == notify.EventRolloutBrakeTripped {
		key += ":" + strconv.Itoa(r.PauseRound)
	}
	return t.notify(ctx, notify.Notice{Event: e, Key: key, To: to, Data: notify.Data{Rollout: &notify.Rollout{
		ID: r.ID, Name: r.Name, State: r.State, Summary: summary, By: by, Round: r.PauseRound, Targets: tally.Targets,
		Succeeded: tally.Succeeded, Failed: tally.Executed() - tally.Succeeded, Cancelled: tally.Cancelled}}})
}

// NotifyExpiringCertificates tells the holder and the help desk of every valid
// certificate that entered its profile's warning period (expiry_warning), once per
// certificate and warning; a certificate already replaced by a newer one of the same
// holder and profile is passed over. It returns how many certificates it noticed.
func (s *Service) NotifyExpiringCertificates(ctx context.Context) (int, error) {
	if !s.notifying() {
		return 0, nil
	}
	profiles, err := s.st.ListProfiles(ctx)
	if err != nil {
		return 0, AsError(err)
	}
	warning := map[string]time.Duration{}
	longest := time.Duration(0)
	for _, sp := range profiles {
		p, err := s.profiles.parse(sp)
		if err != nil {
			s.log.Warn().Err(err).Str("profile", sp.Name).Msg("expiry warnings: profile does not parse")
			continue
		}
		if w := time.Duration(p.ExpiryWarning); w > 0 {
			warning[sp.Name] = w
			longest = max(longest, w)
		}
	}
	if longest == 0 {
		return 0, nil
	}
	now := s.clock()
	valid := false
	var due []store.Certificate
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		cs, next, err := s.st.ListCertificates(ctx, store.CertificateFilter{Revoked: &valid, ExpiresBefore: now.Add(longest)}, p)
		if err != nil {
			return 0, AsError(err)
		}
		for _, c := range cs {
			if w, ok := warning[c.Profile]; ok && !c.NotAfter.Before(now) && c.NotAfter.Before(now.Add(w)) {
				due = append(due, c)
			}
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	noticed := 0
	for _, c := range due {
		if ctx.Err() != nil {
			return noticed, ctx.Err()
		}
		w := warning[c.Profile]
		err := s.update(ctx, func(t *txn) error { return t.notifyExpiring(ctx, c, w) })
		if err != nil {
			s.log.Error().Err(err).Str("certificate", c.Serial).Msg("expiry warning")
			continue
		}
		noticed++
	}
	return noticed, nil
}

func (t *txn) notifyExpiring(ctx context.Context, c store.Certificate, warning time.Duration) error {
	// A newer valid certificate of the holder under the profile replaced it: no warning.
	valid := false
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		cs, next, err := t.ListCertificates(ctx, store.CertificateFilter{HolderID: c.HolderID, Revoked: &valid}, p)
		if err != nil {
			return err
		}
		for _, o := range cs {
			if o.Serial != c.Serial && o.Profile == c.Profile && o.NotAfter.After(c.NotAfter) && o.TokenSerial == c.TokenSerial {
				return nil
			}
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	d := &notify.Certificate{Serial: c.Serial, Subject: c.Subject, Profile: c.Profile, TokenSerial: c.TokenSerial,
		Agent: c.AgentID, NotAfter: c.NotAfter, Warning: profile.Duration(warning).String()}
	var to []notify.Recipient
	seen := map[string]bool{}
	if c.HolderID != "" {
		u, err := t.GetUser(ctx, c.HolderID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		d.Holder, d.HolderName = u.Username, u.DisplayName
		if r, ok := recipientOf(u); ok && u.ID != "" {
			to = append(to, r)
			seen[u.ID] = true
		}
	}
	helpdesk, err := usersWithRole(ctx, t, jobs.RoleHelpdesk)
	if err != nil {
		return err
	}
	for _, u := range helpdesk {
		if r, ok := recipientOf(u); ok && !seen[u.ID] {
			to = append(to, r)
			seen[u.ID] = true
		}
	}
	return t.notify(ctx, notify.Notice{Event: notify.EventCertificateExpiring,
		Key: c.Serial + ":" + strconv.FormatInt(int64(warning/time.Second), 10), Data: notify.Data{Certificate: d}, To: to})
}

// NotifyCRL tells the administrators that the CA's CRL is close to its next update and no
// newer one was made (d.Error says why, when known). key names the occurrence: one notice
// per CRL, or per day while none can be read.
func (s *Service) NotifyCRL(ctx context.Context, d notify.CRL, key string) error {
	if !s.notifying() {
		return nil
	}
	return s.update(ctx, func(t *txn) error {
		admins, err := usersWithRole(ctx, t, jobs.RoleAdmin)
		if err != nil {
			return err
		}
		var to []notify.Recipient
		for _, u := range admins {
			if r, ok := recipientOf(u); ok {
				to = append(to, r)
			}
		}
		crl := d
		return t.notify(ctx, notify.Notice{Event: notify.EventCRLExpiring, Key: key, Data: notify.Data{CRL: &crl}, To: to})
	})
}

// Notification is an outbox row as the API shows it: never its body.
type Notification struct {
	ID          string
	Event       string
	Channel     string
	Recipient   string
	Username    string // the person an e-mail is for
	Language    string
	Subject     string
	State       string
	Attempts    int
	NextAttempt time.Time
	LastError   string
	Held        bool
	Created     time.Time
	SentAt      time.Time
}

// NotificationQuery filters ListNotifications.
type NotificationQuery struct {
	State   string // pending, sent or failed; "" for all
	Event   string
	Channel string
}

// ListNotifications lists the notifications outbox, newest first (manage_users: the
// administrators).
func (s *Service) ListNotifications(ctx context.Context, by Actor, q NotificationQuery, page Page) ([]Notification, string, error) {
	if _, err := s.authorize(ctx, by.user, "list notifications", jobs.PermManageUsers, ""); err != nil {
		return nil, "", err
	}
	switch q.State {
	case "", store.NotificationPending, store.NotificationSent, store.NotificationFailed:
	default:
		return nil, "", badRequest("state", "%q is not pending, sent or failed", q.State)
	}
	if q.Event != "" && !notify.Known(notify.Event(q.Event)) {
		return nil, "", badRequest("event", "unknown event %q (known: %v)", q.Event, notify.Events())
	}
	switch q.Channel {
	case "", store.ChannelEmail, store.ChannelWebhook:
	default:
		return nil, "", badRequest("channel", "%q is neither email nor webhook", q.Channel)
	}
	ns, next, err := s.st.ListNotifications(ctx, store.NotificationFilter{State: q.State, Event: q.Event, Channel: q.Channel}, page.store())
	if err != nil {
		return nil, "", pageErr(err)
	}
	names := newNames(s.st)
	out := make([]Notification, len(ns))
	for i, n := range ns {
		out[i] = Notification{ID: n.ID, Event: n.Event, Channel: n.Channel, Recipient: n.Recipient, Language: n.Language,
			Subject: n.Subject, State: n.State, Attempts: n.Attempts, NextAttempt: n.NextAttempt, LastError: n.LastError,
			Held: n.Held, Created: n.Created, SentAt: n.SentAt}
		if n.UserID != "" {
			out[i].Username = names.user(ctx, n.UserID)
		}
		if n.State != store.NotificationPending {
			out[i].NextAttempt = time.Time{}
		}
	}
	return out, next, nil
}

// checkLanguage checks a user's notification language.
func checkLanguage(v string) error {
	if v != "" && !notify.KnownLanguage(v) {
		return badRequest("language", "%q: notifications are written in %v; \"\" takes the coordinator's default", v, notify.Languages())
	}
	return nil
}
