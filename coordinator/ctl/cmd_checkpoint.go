package ctl

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// syslogMarker precedes a checkpoint's JSON in the coordinator's syslog messages.
const syslogMarker = "audit checkpoint "

func auditCheckpointCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Have the coordinator sign its audit chain head now and print the checkpoint",
		Long: `Have the coordinator sign a checkpoint of its audit chain head (sequence number, hash,
time) now, and print it as JSON. Keep the output where the coordinator's administrators
cannot change it: a later audit verify --checkpoint FILE proves that the log was not cut
or rewritten up to that entry, which the hash chain alone cannot. Appending several runs
to one file (>>) makes a file of several checkpoints. Admin and auditor only.`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			cp, err := c.MakeCheckpoint(cmd.Context())
			if err != nil {
				return err
			}
			// The checkpoint itself is the output, with or without --json.
			return printJSON(e.stdout, cp)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checkpoint as JSON (the default, kept for scripts)")
	return cmd
}

func auditCheckpointsCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoints [--limit N] [--all] [--json]",
		Short: "List the checkpoints the coordinator kept, newest first (admin, auditor)",
		Long: `List the signed checkpoints of the audit chain head that the coordinator kept, newest
first. They are copies in the coordinator's own database: the ones that prove something
are those kept elsewhere (audit checkpoint, syslog). --json prints a file that audit
verify --checkpoint reads.`,
		Args: exactArgs(),
	}
	lf := addListFlags(cmd, "checkpoints")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllCheckpoints(cmd.Context(), lf.pageSize()), func(cs []audit.Checkpoint) error {
			t := newTable(e.stdout, "SEQ", "TIME", "HASH", "KEY")
			for _, cp := range cs {
				t.row(strconv.FormatInt(cp.Seq, 10), timeText(cp.Time), cp.Hash, cp.KeyID)
			}
			return t.flush()
		})
	})
	return cmd
}

func auditKeyCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "key",
		Short: "Print the public key the coordinator signs audit checkpoints with (PEM)",
		Long: `Print the public key the coordinator signs audit checkpoints with, as PEM. Save it once,
where the coordinator cannot change it, and give it to audit verify --key: a key fetched
at verification time is only as trustworthy as the coordinator that sends it.`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			k, err := c.CheckpointKey(cmd.Context())
			if err != nil {
				return err
			}
			if _, err := k.PublicKey(); err != nil {
				return err
			}
			_, err = io.WriteString(e.stdout, k.PEM)
			return err
		}),
	}
}

// keptCheckpoint is a checkpoint an auditor kept, and where it was read from.
type keptCheckpoint struct {
	cp     audit.Checkpoint
	source string // FILE#N
}

// readCheckpointFiles reads checkpoints from files holding one or more JSON checkpoints
// (objects, arrays of them, or both, one after another), or syslog lines carrying them.
func readCheckpointFiles(paths []string) ([]keptCheckpoint, error) {
	var out []keptCheckpoint
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		cps, err := parseCheckpoints(data)
		if err != nil {
			return nil, fmt.Errorf("checkpoint file %s: %w", p, err)
		}
		if len(cps) == 0 {
			return nil, fmt.Errorf("checkpoint file %s holds no checkpoint", p)
		}
		for i, cp := range cps {
			src := p
			if len(cps) > 1 {
				src = fmt.Sprintf("%s#%d", p, i+1)
			}
			out = append(out, keptCheckpoint{cp: cp, source: src})
		}
	}
	return out, nil
}

func parseCheckpoints(data []byte) ([]audit.Checkpoint, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] != '{' && trimmed[0] != '[' {
		return parseSyslogCheckpoints(data)
	}
	var out []audit.Checkpoint
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	for n := 1; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("JSON value %d: %w", n, err)
		}
		var many []audit.Checkpoint
		if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
			if err := strictJSON(raw, &many); err != nil {
				return nil, fmt.Errorf("JSON value %d: %w", n, err)
			}
		} else {
			var one audit.Checkpoint
			if err := strictJSON(raw, &one); err != nil {
				return nil, fmt.Errorf("JSON value %d: %w", n, err)
			}
			many = []audit.Checkpoint{one}
		}
		out = append(out, many...)
	}
}

// parseSyslogCheckpoints takes the checkpoints out of syslog lines.
func parseSyslogCheckpoints(data []byte) ([]audit.Checkpoint, error) {
	var out []audit.Checkpoint
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		_, js, ok := strings.Cut(sc.Text(), syslogMarker)
		if !ok {
			continue
		}
		var cp audit.Checkpoint
		if err := strictJSON([]byte(js), &cp); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, cp)
	}
	return out, sc.Err()
}

func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// checkpointKey reads the pinned key, or fetches the coordinator's with a warning.
func checkpointKey(e *env, cmd *cobra.Command, c *client.Client, keyFile string) (ed25519.PublicKey, error) {
	if keyFile != "" {
		data, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		pub, err := audit.ParseCheckpointPublicKey(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyFile, err)
		}
		return pub, nil
	}
	k, err := c.CheckpointKey(cmd.Context())
	if err != nil {
		return nil, fmt.Errorf("fetching the checkpoint key: %w", err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	e.warnf("checking the checkpoints with the key the coordinator sent (ID %s); a key pinned with --key (saved earlier by audit key) is stronger: a coordinator taken over could send its own", k.KeyID)
	return pub, nil
}

// checkpointRejected is a kept checkpoint whose signature does not verify: the file was
// altered, or the coordinator's key was replaced. Either is tampering.
type checkpointRejected struct {
	source string
	err    error
}

func (r checkpointRejected) Error() string {
	return fmt.Sprintf("the checkpoint in %s does not verify: %v", r.source, r.err)
}

func (r checkpointRejected) Unwrap() error { return r.err }

// Is makes the exit status the tampering one.
func (r checkpointRejected) Is(target error) bool { return target == audit.ErrTampered }
