package ctl

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
)

func issueCommand(e *env) *cobra.Command {
	var (
		req      client.JobCreate
		kind     string
		deadline string
		token    string
		key      string
		asJSON   bool
		doc      client.Document
	)
	cmd := &cobra.Command{
		Use:   "issue --holder H --agent A --profile P [--token URI|SERIAL] [--kind K [--certificate-id HEX]] [--document-number N --document-date YYYY-MM-DD] [--idempotency-key K]",
		Short: "Queue a job for a holder at a workstation and print its ID (helpdesk, admin)",
		Long: `Queue a job: issue a token of profile P for holder H at the workstation of agent A.
Only the new job's ID is printed, so it can be captured: JOB=$(tokenfleetctl issue ...).
A new job for the same holder, profile and target supersedes an open one.
Kinds: ` + joinStrings(jobs.Kinds(), ", ") + `.

--token names the token to use among those agent A last reported (tokenfleetctl tokens
--agent A): by serial, or by PKCS#11 URI (RFC 7512) such as
"pkcs11:model=Rutoken%20ECP;serial=0123abcd"; a URI must match exactly one token. Here
--token is the target token, not the API token: pass that with --token-file or
$TOKENFLEET_TOKEN. --token-serial names a token the agent has not reported yet.

Each run sends the request with a random idempotency key, and sends it again with that
key when the connection drops before the answer, so a lost answer never makes two jobs.
A script that may run the same command again (after a crash, from a retrying scheduler)
passes its own --idempotency-key (1 to 255 printable ASCII characters, for example
"onboard-alice-2026-12"): a run with a key used before prints the job the first run
created and creates nothing; the same key with different flags is refused.

--document-number and --document-date cite the document the issuance is based on (an
order, a decision), for the crypto-device register: a profile with register.document:
required refuses an issue without them. Approvers see the document and approve it with
the rest of the request.

--kind register_certificate --certificate-id HEX reads the certificate with that CKA_ID
from the holder's token (--token) and records its public key as the holder's encryption
key; pkcs11-tool --list-objects --type cert shows the IDs. Under a profile whose key is
made by the coordinator (key.origin: server), an issue becomes a server_keygen job.`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			req.Kind = jobs.Kind(kind)
			if !jobs.KnownKind(req.Kind) {
				return usageErrorf("--kind %q: want one of %s", kind, joinStrings(jobs.Kinds(), ", "))
			}
			if (req.CertificateID != "") != (req.Kind == jobs.KindRegisterCertificate) {
				return usageErrorf("--certificate-id goes with --kind %s, and that kind needs it: the CKA_ID of the certificate to register", jobs.KindRegisterCertificate)
			}
			if token != "" && req.TokenSerial != "" {
				return usageErrorf("pass --token or --token-serial, not both")
			}
			if doc != (client.Document{}) {
				req.Document = &doc
			}
			if deadline != "" {
				t, err := e.parseDeadline(deadline)
				if err != nil {
					return err
				}
				req.Deadline = t
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			if token != "" {
				if req.TokenSerial, err = resolveToken(cmd.Context(), c, req.Agent, token); err != nil {
					return err
				}
			}
			j, replayed, err := c.CreateJobWithKey(cmd.Context(), req, key)
			if err != nil {
				return err
			}
			if replayed {
				// stdout stays the job ID alone, as scripts capture it.
				if _, err := fmt.Fprintf(e.stderr, "job %s was created by an earlier request with this idempotency key; nothing new was created\n", j.ID); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(e.stdout, j)
			}
			if j.ID == "" {
				return fmt.Errorf("the coordinator answered without a job ID")
			}
			_, err = fmt.Fprintln(e.stdout, j.ID)
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Holder, "holder", "", "holder's username (required)")
	f.StringVar(&req.Agent, "agent", "", "agent ID of the target workstation (required)")
	f.StringVar(&req.Profile, "profile", "", "profile name (required)")
	f.StringVar(&token, "token", "", "the token to use, among those the agent reported: its serial or a PKCS#11 URI (default: any token the profile allows)")
	f.StringVar(&req.TokenSerial, "token-serial", "", "serial of a token the agent has not reported yet")
	f.StringVar(&kind, "kind", string(jobs.KindIssue), "job kind")
	f.StringVar(&req.CertificateID, "certificate-id", "", "register_certificate: CKA_ID (hex) of the certificate on the token to register as the holder's encryption key")
	f.StringVar(&deadline, "deadline", "", "deadline: RFC 3339 time or a span from now (72h, 3d); default: the profile's expires_after")
	f.BoolVar(&asJSON, "json", false, "print the created job as JSON instead of its ID")
	f.StringVar(&doc.Number, "document-number", "", "number of the document the issuance is based on (with --document-date)")
	f.StringVar(&doc.Date, "document-date", "", "date of that document, YYYY-MM-DD (with --document-number)")
	f.StringVar(&key, "idempotency-key", "", "name this request: running again with the same key returns the job the first run created (default: a random key per run)")
	for _, name := range []string{"holder", "agent", "profile"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func (e *env) parseDeadline(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	d, err := profile.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, usageErrorf("--deadline %q: want an RFC 3339 time (2030-01-02T15:04:05Z) or a span from now (72h, 3d)", s)
	}
	return e.now().UTC().Add(time.Duration(d)), nil
}

func jobsCommand(e *env) *cobra.Command {
	var (
		state, org, holder, agent, kind string
		awaitingMe                      bool
	)
	cmd := &cobra.Command{
		Use:   "jobs [--state S] [--org O] [--holder H] [--agent A] [--kind K] [--awaiting-me] [--limit N] [--all]",
		Short: "List jobs, newest first",
		Long: `List jobs, newest first.
States: ` + joinStrings(jobs.States(), ", ") + `.

--awaiting-me lists the jobs that wait for your decision: those tokenfleetctl approve
would take from you now, by the coordinator's own rules (your role and organisation,
never your own request or token, one decision per person), at the request gate or, for
a CA operator, before signing.`,
		Args: exactArgs(),
	}
	lf := addListFlags(cmd, "jobs")
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only jobs in this state")
	f.StringVar(&org, "org", "", "only jobs of this organisation")
	f.StringVar(&holder, "holder", "", "only jobs for this holder (username)")
	f.StringVar(&agent, "agent", "", "only jobs for this agent")
	f.StringVar(&kind, "kind", "", "only jobs of this kind")
	f.BoolVar(&awaitingMe, "awaiting-me", false, "only jobs that wait for your decision")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		if state != "" && !jobs.KnownState(jobs.State(state)) {
			return usageErrorf("--state %q: want one of %s", state, joinStrings(jobs.States(), ", "))
		}
		if kind != "" && !jobs.KnownKind(jobs.Kind(kind)) {
			return usageErrorf("--kind %q: want one of %s", kind, joinStrings(jobs.Kinds(), ", "))
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		filter := client.JobFilter{State: jobs.State(state), Organization: org, Holder: holder, Agent: agent, Kind: jobs.Kind(kind),
			AwaitingMe: awaitingMe}
		if awaitingMe {
			lf.what = "jobs awaiting your decision"
		}
		return list(e, lf, c.AllJobs(cmd.Context(), filter, lf.pageSize()), func(js []client.Job) error {
			t := newTable(e.stdout, "ID", "KIND", "STATE", "HOLDER", "PROFILE", "AGENT", "APPROVALS", "REQUESTER", "UPDATED")
			for _, j := range js {
				t.row(j.ID, string(j.Kind), string(j.State), j.Holder, j.Profile, j.Agent, j.Approvals, j.Requester, timeText(j.Updated))
			}
			return t.flush()
		})
	})
	return cmd
}

func jobCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "One job: show, watch, pin"}
	var asJSON bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a job with its approvals, timeline and steps",
		Args:  exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			d, err := c.GetJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, d)
			}
			return printJob(e, d)
		}),
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print the job as JSON")
	cmd.AddCommand(show, jobWatchCommand(e), jobPINCommand(e))
	return cmd
}

func printJob(e *env, d client.JobDetail) error {
	now := e.now()
	t := newTable(e.stdout)
	t.row("Job", d.ID)
	t.row("Kind", string(d.Kind))
	t.row("State", string(d.State))
	t.row("Holder", d.Holder)
	t.row("Organization", d.Organization)
	t.row("Profile", d.Profile+hashSuffix(d.ProfileHash))
	t.row("Agent", d.Agent+agentPresence(d, now))
	tokenSerial := d.TokenSerial
	if tokenSerial == "" {
		tokenSerial = "any the profile allows"
	}
	t.row("Token", tokenSerial)
	if d.TokenURI != "" {
		t.row("Token URI", d.TokenURI)
	}
	if d.Subject != "" {
		t.row("Subject", d.Subject)
	}
	if len(d.SANs) > 0 {
		t.row("SANs", strings.Join(d.SANs, ", "))
	}
	if d.Document != nil {
		t.row("Document", documentText(d.Document))
	}
	if d.BindingHash != "" {
		t.row("Binding hash", d.BindingHash)
	}
	t.row("Requester", d.Requester)
	t.row("Approvals", d.Approvals)
	t.row("Attempt", strconv.Itoa(d.Attempt))
	t.row("Deadline", bothTimes(d.Deadline, now))
	t.row("Created", bothTimes(d.Created, now))
	t.row("Updated", bothTimes(d.Updated, now))
	if d.ErrorCode != "" || d.ErrorMessage != "" {
		t.row("Error", strings.TrimPrefix(d.ErrorCode+": "+d.ErrorMessage, ": "))
	}
	if d.SupersededBy != "" {
		t.row("Superseded by", d.SupersededBy)
	}
	if d.WaitingReason != "" {
		t.row("Waiting", d.WaitingReason)
	}
	if d.AgentResult != "" {
		t.row("Agent said", d.AgentResult)
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(e.stdout, "\nApprovals:")
	if len(d.ApprovalList) == 0 {
		fmt.Fprintln(e.stdout, "  none yet")
	} else {
		t = newTable(e.stdout, "  GATE", "APPROVER", "DECISION", "VALID", "AT", "REASON")
		for _, a := range d.ApprovalList {
			t.row("  "+string(a.Gate), a.Approver, string(a.Decision), yesNo(a.Valid), timeText(a.At), a.Reason)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(e.stdout, "\nTimeline:")
	if len(d.Timeline) == 0 {
		fmt.Fprintln(e.stdout, "  empty")
	} else {
		t = newTable(e.stdout, "  AT", "FROM", "TO", "ATTEMPT", "ACTOR", "REASON")
		for _, ev := range d.Timeline {
			from := string(ev.From)
			if from == "" {
				from = "(new)"
			}
			t.row("  "+timeText(ev.At), from, string(ev.To), strconv.Itoa(ev.Attempt), ev.Actor, ev.Reason)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(e.stdout, "\nSteps:")
	if len(d.Steps) == 0 {
		_, err := fmt.Fprintln(e.stdout, "  none yet")
		return err
	}
	t = newTable(e.stdout, "  AT", "ATTEMPT", "STEP", "DETAIL")
	for _, s := range d.Steps {
		t.row("  "+timeText(s.At), strconv.Itoa(s.Attempt), string(s.Step), s.Detail)
	}
	return t.flush()
}

// hashSuffix shows the start of a hash, enough to compare two by eye.
func hashSuffix(h string) string {
	if h == "" {
		return ""
	}
	if len(h) > 12 {
		h = h[:12]
	}
	return " (hash " + h + "…)"
}

// decisionCommand is approve, reject or cancel.
func decisionCommand(e *env, verb string) *cobra.Command {
	var (
		reason string
		asJSON bool
		yes    bool
	)
	var short, use, past, long string
	switch verb {
	case "approve":
		use, past = "approve ID [--reason R] [--yes]", "approved"
		short = "Approve a job at the gate it waits at (approver or CA operator; never your own request)"
		long = short + `.

Before approving, print what is approved: the holder, the certificate subject and SANs,
the profile, the target agent and token, and the binding hash. The approval is bound to
that hash, so a job changed in the meantime is refused (binding_mismatch), never
approved unseen. On a terminal, ask for confirmation first (the summary and the question
on standard error); --yes skips the question, for scripts, and without a terminal
nothing is asked and the summary starts the output once the job is approved.`
	case "reject":
		use, past = "reject ID --reason R", "rejected"
		short = "Reject a job; one rejection ends it, and a reason is required"
	default:
		use, past = "cancel ID [--reason R]", "cancelled"
		short = "Cancel a job that is not yet running (its requester or an admin)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if verb == "reject" && strings.TrimSpace(reason) == "" {
				return usageErrorf("a rejection needs a reason: pass --reason")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			ctx, id := cmd.Context(), args[0]
			var d client.JobDetail
			switch verb {
			case "approve":
				d, err = e.approve(ctx, c, id, reason, yes, asJSON)
			case "reject":
				d, err = c.Reject(ctx, id, reason)
			default:
				d, err = c.Cancel(ctx, id, reason)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, d)
			}
			msg := fmt.Sprintf("job %s %s: state %s", clean(d.ID), past, d.State)
			if verb == "approve" && d.State == jobs.StatePendingApproval {
				msg = fmt.Sprintf("job %s: approval recorded; still %s", clean(d.ID), d.State)
			}
			if d.Approvals != "" {
				msg += ", approvals " + clean(d.Approvals)
			}
			_, err = fmt.Fprintln(e.stdout, msg)
			return err
		}),
	}
	help := "why (kept in the job's history and the audit log)"
	if verb == "reject" {
		help = "why the job is rejected (required)"
	}
	cmd.Flags().StringVar(&reason, "reason", "", help)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the job as JSON")
	if verb == "approve" {
		cmd.Flags().BoolVarP(&yes, "yes", "y", false, "approve without asking for confirmation")
	}
	return cmd
}

// agentPresence is " (online)", " (offline, last seen 3h ago)" or " (never connected)";
// "" when the coordinator does not say.
func agentPresence(d client.JobDetail, now time.Time) string {
	switch d.AgentPresence {
	case "online":
		return " (online)"
	case "never_connected":
		return " (never connected)"
	case "offline":
		return " (offline, last seen " + relText(d.AgentLastSeen, now) + ")"
	}
	return ""
}

// documentText is a cited document as the commands show it.
func documentText(d *client.Document) string {
	return d.Number + " of " + d.Date
}
