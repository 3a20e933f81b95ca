package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// errDeclined is an approval the approver did not confirm.
var errDeclined = errors.New("not approved: the job stays as it was")

// approve shows what is being approved, asks on a terminal unless yes, and approves the
// job bound to what was shown: if the job changed in between, the coordinator refuses
// (binding_mismatch) instead of taking the approval for something nobody saw. When it
// asks, the summary goes with the question to standard error, which the person at the
// terminal sees wherever standard output goes; otherwise it is the start of the
// command's output once approved (--json carries it in the job instead).
func (e *env) approve(ctx context.Context, c *client.Client, id, reason string, yes, asJSON bool) (client.JobDetail, error) {
	d, err := c.GetJob(ctx, id)
	if err != nil {
		return client.JobDetail{}, err
	}
	ask := !yes && e.isTerminal(e.stdin)
	if ask {
		if _, err := io.WriteString(e.stderr, approvalSummary(d)); err != nil {
			return client.JobDetail{}, err
		}
		fmt.Fprintf(e.stderr, "Approve job %s? [y/N] ", clean(d.ID))
		answer, err := bufio.NewReader(e.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return client.JobDetail{}, fmt.Errorf("reading the answer: %w", err)
		}
		switch strings.ToLower(strings.TrimSpace(answer)) {
		case "y", "yes":
		default:
			return client.JobDetail{}, errDeclined
		}
	}
	approved, err := c.ApproveReviewed(ctx, id, client.Decision{Reason: reason, BindingHash: d.BindingHash})
	if err != nil || ask || asJSON {
		return approved, err
	}
	// Unasked, what was approved is the start of the output: only once it is approved,
	// so that a refusal leaves standard output empty, as every failing command does.
	_, err = io.WriteString(e.stdout, approvalSummary(d))
	return approved, err
}

// approvalSummary is what an approver approves: who gets which names from which profile,
// where, and the binding hash the approval is bound to.
func approvalSummary(d client.JobDetail) string {
	var b strings.Builder
	gate := jobs.GateRequest
	if d.State == jobs.StateAwaitingCertificate {
		gate = jobs.GateCAOperator
	}
	fmt.Fprintf(&b, "Approving job %s (%s, %s gate, approvals %s):\n", clean(d.ID), d.Kind, gate, clean(d.Approvals))
	t := newTable(&b)
	holder := d.Holder
	if d.Organization != "" {
		holder += " (" + d.Organization + ")"
	}
	t.row("  Holder", holder)
	if d.Subject != "" {
		t.row("  Subject", d.Subject)
	}
	if len(d.SANs) > 0 {
		t.row("  SANs", strings.Join(d.SANs, ", "))
	}
	t.row("  Profile", d.Profile+hashSuffix(d.ProfileHash))
	token := d.TokenURI
	if token == "" {
		token = "any the profile allows"
	}
	t.row("  Target", "agent "+d.Agent+", token "+token)
	if d.Document != nil {
		t.row("  Document", documentText(d.Document))
	}
	t.row("  Requester", d.Requester)
	t.row("  Binding hash", d.BindingHash)
	_ = t.flush()
	return b.String()
}
