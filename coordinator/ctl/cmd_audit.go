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
	cmd := &cobra.Command{Use: "audit", Short: "The audit log: list, verify, signed checkpoints (auditor, admin)"}
	cmd.AddCommand(auditListCommand(e), auditVerifyCommand(e), auditCheckpointCommand(e), auditCheckpointsCommand(e),
		auditKeyCommand(e))
	return cmd
}

func auditListCommand(e *env) *cobra.Command {
	var after int64
	cmd := &cobra.Command{
		Use:   "list [--after SEQ] [--limit N] [--all]",
		Short: "List audit entries in sequence order, as stored (unverified: see audit verify)",
		Long: `List audit entries in sequence order, as stored (unverified: see audit verify). The
ACTOR column shows usernames; --json gives each entry as the chain holds it, the actor's
ID in actor and the username in actor_name.`,
		Args: exactArgs(),
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
				actor := en.ActorName
				if actor == "" {
					actor = en.Actor // a coordinator that does not name actors
				}
				t.row(strconv.FormatInt(en.Seq, 10), timeText(en.Time), actor, en.Action, en.Job, en.Target, en.Reason)
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
	// Checkpoints is how many kept checkpoints the log was held to.
	Checkpoints int `json:"checkpoints,omitempty"`
	// BadCheckpoint says which kept checkpoint does not verify, and why.
	BadCheckpoint string `json:"bad_checkpoint,omitempty"`
}

// brokenEntry is the first entry where the chain breaks.
type brokenEntry struct {
	Seq    int64      `json:"seq"`
	Kind   audit.Kind `json:"kind"`
	Detail string     `json:"detail"`
	// Checkpoint is the kept checkpoint a cut or rewritten tail contradicts, and the file
	// it came from.
	Checkpoint     *audit.Checkpoint `json:"checkpoint,omitempty"`
	CheckpointFile string            `json:"checkpoint_file,omitempty"`
}

// tamperedError reports a broken chain in the command's words; it unwraps to the
// *audit.VerifyError, so the exit status can tell tampering from a failed download.
type tamperedError struct {
	ve     *audit.VerifyError
	source string // the file of the checkpoint contradicted, if any
}

func (t tamperedError) Error() string {
	msg := fmt.Sprintf("the audit log was tampered with: entry %d %s: %s", t.ve.Seq, t.ve.Kind, t.ve.Detail)
	if t.source != "" {
		msg += " (checkpoint from " + t.source + ")"
	}
	return msg
}

func (t tamperedError) Unwrap() error { return t.ve }

func auditVerifyCommand(e *env) *cobra.Command {
	var (
		pageSize        int
		asJSON          bool
		checkpointFiles []string
		keyFile         string
	)
	cmd := &cobra.Command{
		Use:   "verify [--checkpoint FILE]... [--key FILE]",
		Short: "Download the whole audit log and verify its hash chain here",
		Long: `Download the audit log page by page and verify its hash chain on this machine, so a
coordinator cannot vouch for its own log. When the chain is broken, name the first bad
entry and how (edited, removed, reordered, inserted, or a row that can no longer be read)
and exit with status 3.

A chain alone cannot show a tail cut off, or a tail rewritten with its hashes recomputed.
Checkpoints kept earlier can (audit checkpoint, or the coordinator's syslog messages):
with --checkpoint FILE (repeatable; a file may hold several) each checkpoint's signature
is checked with the coordinator's checkpoint key, pinned with --key FILE (saved earlier by
audit key) or else fetched from the coordinator, and the log must still hold the entry at
each checkpoint's sequence number with exactly the checkpoint's hash. A log that stops
short of a checkpoint, differs from one, or a checkpoint whose signature does not verify,
exits with status 3 naming the checkpoint and the entry.`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if pageSize < 1 || pageSize > maxAuditPage {
				return usageErrorf("--page-size must be between 1 and %d", maxAuditPage)
			}
			if keyFile != "" && len(checkpointFiles) == 0 {
				return usageErrorf("--key checks checkpoints: give them with --checkpoint FILE")
			}
			kept, err := readCheckpointFiles(checkpointFiles)
			if err != nil {
				return err
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			rep := verifyReport{Checkpoints: len(kept)}
			report := func(err error) error {
				if asJSON {
					if perr := printJSON(e.stdout, rep); perr != nil {
						return perr
					}
				}
				return err
			}
			var cps []audit.Checkpoint
			if len(kept) > 0 {
				pub, err := checkpointKey(e, cmd, c, keyFile)
				if err != nil {
					return err
				}
				for _, k := range kept {
					if err := audit.VerifyCheckpoint(pub, k.cp); err != nil {
						rej := checkpointRejected{source: k.source, err: err}
						rep.BadCheckpoint = rej.Error()
						return report(rej)
					}
					cps = append(cps, k.cp)
				}
			}
			res, err := c.VerifyAuditCheckpoints(cmd.Context(), pageSize, cps)
			var ve *audit.VerifyError
			if err != nil && !errors.As(err, &ve) {
				return err
			}
			rep.Verified, rep.Entries, rep.Head = err == nil, res.Entries, res.Head
			if ve != nil {
				te := tamperedError{ve: ve}
				rep.Broken = &brokenEntry{Seq: ve.Seq, Kind: ve.Kind, Detail: ve.Detail, Checkpoint: ve.Checkpoint}
				if ve.Checkpoint != nil {
					te.source = sourceOf(kept, *ve.Checkpoint)
					rep.Broken.CheckpointFile = te.source
				}
				return report(te)
			}
			if asJSON {
				return report(nil)
			}
			if _, err := fmt.Fprintf(e.stdout, "audit log verified: %d entries, head seq %d hash %s\n",
				res.Entries, res.Head.Seq, res.Head.Hash); err != nil {
				return err
			}
			if len(cps) > 0 {
				_, err = fmt.Fprintf(e.stdout, "consistent with %d kept checkpoint(s), the latest of entry %d\n", len(cps), latestSeq(cps))
			}
			return err
		}),
	}
	cmd.Flags().IntVar(&pageSize, "page-size", 1000, "entries per request")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON (also when the chain is broken)")
	cmd.Flags().StringArrayVar(&checkpointFiles, "checkpoint", nil, "file of checkpoints kept earlier to hold the log to (repeatable)")
	cmd.Flags().StringVar(&keyFile, "key", "", "the coordinator's checkpoint public key (PEM, from audit key), pinned")
	return cmd
}

// sourceOf names the file a checkpoint was read from.
func sourceOf(kept []keptCheckpoint, cp audit.Checkpoint) string {
	for _, k := range kept {
		if k.cp.Seq == cp.Seq && k.cp.Hash == cp.Hash && k.cp.Time.Equal(cp.Time) {
			return k.source
		}
	}
	return ""
}

func latestSeq(cps []audit.Checkpoint) int64 {
	var m int64
	for _, c := range cps {
		m = max(m, c.Seq)
	}
	return m
}
