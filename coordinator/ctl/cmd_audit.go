package ctl

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// maxAuditPage is the largest audit page the API serves.
const maxAuditPage = 5000

func auditCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit log: list, verify (auditor, admin)"}
	cmd.AddCommand(auditListCommand(e), auditVerifyCommand(e))
	return cmd
}

func auditListCommand(e *env) *cobra.Command {
	var after int64
	cmd := &cobra.Command{
		Use:   "list [--after SEQ] [--limit N] [--all]",
		Short: "List audit entries in sequence order, as stored (unverified: see audit verify)",
		Args:  exactArgs(),
	}
	lf := addListFlags(cmd, "audit entries")
	cmd.Flags().Int64Var(&after, "after", 0, "start after this sequence number")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		if after < 0 {
			return usageErrorf("--after must not be negative")
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		pageSize := lf.pageSize()
		if lf.all {
			pageSize = maxAuditPage
		}
		return list(e, lf, c.AuditEntries(cmd.Context(), after, pageSize), func(es []client.AuditEntry) error {
			t := newTable(e.stdout, "SEQ", "TIME", "ACTOR", "ACTION", "JOB", "TARGET", "REASON")
			for _, en := range es {
				t.row(strconv.FormatInt(en.Seq, 10), timeText(en.Time), en.Actor, en.Action, en.Job, en.Target, en.Reason)
			}
			return t.flush()
		})
	})
	return cmd
}

// verifyReport is audit verify's JSON output.
type verifyReport struct {
	Verified bool         `json:"verified"`
	Entries  int64        `json:"entries"`
	Head     audit.Head   `json:"head"` // the last entry verified
	Broken   *brokenEntry `json:"broken,omitempty"`
}

// brokenEntry is the first entry where the chain breaks.
type brokenEntry struct {
	Seq    int64      `json:"seq"`
	Kind   audit.Kind `json:"kind"`
	Detail string     `json:"detail"`
}

// tamperedError reports a broken chain in the command's words; it unwraps to the
// *audit.VerifyError, so the exit status can tell tampering from a failed download.
type tamperedError struct{ ve *audit.VerifyError }

func (t tamperedError) Error() string {
	return fmt.Sprintf("the audit log was tampered with: entry %d %s: %s", t.ve.Seq, t.ve.Kind, t.ve.Detail)
}

func (t tamperedError) Unwrap() error { return t.ve }

func auditVerifyCommand(e *env) *cobra.Command {
	var (
		pageSize int
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Download the whole audit log and verify its hash chain here",
		Long: `Download the audit log page by page and verify its hash chain on this machine, so a
coordinator cannot vouch for its own log. On success, print how many entries were checked
and the hash of the last one (record it: a later run that shows an older head means entries
were removed from the end, which a chain alone cannot show). When the chain is broken,
name the first bad entry and how (edited, removed, reordered, inserted) and exit with
status 3.`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if pageSize < 1 || pageSize > maxAuditPage {
				return usageErrorf("--page-size must be between 1 and %d", maxAuditPage)
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			res, err := c.VerifyAudit(cmd.Context(), pageSize)
			var ve *audit.VerifyError
			if err != nil && !errors.As(err, &ve) {
				return err
			}
			if asJSON {
				rep := verifyReport{Verified: err == nil, Entries: res.Entries, Head: res.Head}
				if ve != nil {
					rep.Broken = &brokenEntry{Seq: ve.Seq, Kind: ve.Kind, Detail: ve.Detail}
				}
				if perr := printJSON(e.stdout, rep); perr != nil {
					return perr
				}
			}
			if ve != nil {
				return tamperedError{ve}
			}
			if !asJSON {
				_, err = fmt.Fprintf(e.stdout, "audit log verified: %d entries, head seq %d hash %s\n",
					res.Entries, res.Head.Seq, res.Head.Hash)
			}
			return err
		}),
	}
	cmd.Flags().IntVar(&pageSize, "page-size", 1000, "entries per request")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON (also when the chain is broken)")
	return cmd
}
