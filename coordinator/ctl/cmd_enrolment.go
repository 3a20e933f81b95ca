package ctl

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
)

func enrolmentKeyCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enrolment-key",
		Short: "Activation codes and enrolment keys agents enrol themselves with: create, list, revoke",
	}
	cmd.AddCommand(enrolmentKeyCreateCommand(e), enrolmentKeyListCommand(e), enrolmentKeyRevokeCommand(e))
	return cmd
}

// createdKeys is what enrolment-key create --json prints: the API's answer, and the
// fingerprint of the CA agents pin when they enrol.
type createdKeys struct {
	client.EnrolmentKeys
	CASHA256 string `json:"ca_sha256,omitempty"`
}

func enrolmentKeyCreateCommand(e *env) *cobra.Command {
	var (
		in             client.EnrolmentKeyCreate
		expiresIn, out string
		asCSV, asJSON  bool
	)
	cmd := &cobra.Command{
		Use: "create --kind key|code [--count N] [--name N] [--org O] [--tag T]... [--agent-id ID] " +
			"[--pre-approved] [--max-uses N] [--expires-in D] [--csv] [--out FILE]",
		Short: "Create one-off activation codes or a reusable enrolment key (admin) and print their secrets, once",
		Long: `Create activation codes or an enrolment key, which agents exchange for their identity and
broker credentials (tokenfleet-agent enrol). The secrets are printed this once: the
coordinator keeps only their hashes.

--kind code: one-off activation codes, each enrolling one agent; valid 15 minutes by
default, at most 21 days before their use. --count N makes up to 1000 at once, for a
software-distribution run; --agent-id ties a single code to one agent ID.
--kind key: one reusable key for many agents; valid 30 days by default, at most 366;
--max-uses N limits how many agents it enrols (0, the default: no limit).

Agents enrolled get the key's organisation and tags. A one-off code is the approval of
the agent it enrols; the agents of a key wait as pending until an administrator runs
tokenfleetctl agent approve ID, unless the key is --pre-approved.

Beside the secrets the command prints the SHA-256 fingerprint of the CA agents pin with
tokenfleet-agent enrol --ca-fingerprint: for an https:// coordinator URL, the highest CA
certificate of the TLS chain this machine verified (with --ca-file or the system's roots)
that the coordinator presents; for http://, the root of the coordinator's CA
(tokenfleetctl ca cert).

--csv prints a header and one line per secret: id,secret,agent_id,expires (RFC 3339,
UTC). --out FILE writes the output (CSV, JSON or table) to a new file of mode 0600
instead of standard output; an existing file is never overwritten. Example:

  tokenfleetctl enrolment-key create --kind code --count 500 --expires-in 21d \
      --org acme --tag site:paris --csv --out codes.csv`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			switch {
			case in.Kind == "":
				return usageErrorf("--kind is required: code (one-off activation codes) or key (a reusable enrolment key)")
			case asCSV && asJSON:
				return usageErrorf("pass --csv or --json, not both")
			case cmd.Flags().Changed("count") && in.Count < 1:
				return usageErrorf("--count must be at least 1")
			}
			if expiresIn != "" {
				d, err := profile.ParseDuration(expiresIn)
				if err != nil {
					return usageErrorf("--expires-in: %v", err)
				}
				if d <= 0 {
					return usageErrorf("--expires-in must be positive")
				}
				in.ExpiresIn = time.Duration(d).String()
			}
			// The file first: a name that is taken must not cost secrets nobody can read.
			w, finish, err := openOutput(e, out)
			if err != nil {
				return err
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return finish(err)
			}
			fp, err := e.caFingerprint(cmd.Context(), c)
			if err != nil {
				return finish(err)
			}
			keys, err := c.CreateEnrolmentKeys(cmd.Context(), in)
			if err != nil {
				return finish(err)
			}
			return finish(e.printCreatedKeys(w, out, keys, fp, asCSV, asJSON))
		}),
	}
	f := cmd.Flags()
	f.StringVar(&in.Kind, "kind", "", "code (one-off activation codes) or key (a reusable enrolment key); required")
	f.IntVar(&in.Count, "count", 0, "codes: how many to create (1 to 1000; default 1)")
	f.StringVar(&in.Name, "name", "", "what it is for, shown in listings")
	f.StringVar(&in.Organization, "org", "", "organisation its agents belong to")
	f.StringArrayVar(&in.Tags, "tag", nil, "tag given to its agents, repeatable (lower-case letters, digits and _ . : -)")
	f.StringVar(&in.AgentID, "agent-id", "", "codes: the one agent ID the code may enrol")
	f.BoolVar(&in.PreApproved, "pre-approved", false, "keys: its agents are active at once, without an administrator's approval (a code always is)")
	f.IntVar(&in.MaxUses, "max-uses", 0, "keys: how many agents it may enrol (0: no limit)")
	f.StringVar(&expiresIn, "expires-in", "", "validity: 15m, 72h or whole days (21d); default 15m for codes, 30d for keys")
	f.BoolVar(&asCSV, "csv", false, "print id,secret,agent_id,expires lines (with a header) for software distribution")
	f.StringVar(&out, "out", "", "write the output to this new file (mode 0600) instead of standard output")
	f.BoolVar(&asJSON, "json", false, "print the created codes or key as JSON, with the CA fingerprint (ca_sha256)")
	return cmd
}

// openOutput opens where create writes: standard output, or a new file of mode 0600 that
// is never an existing one. finish closes the file and passes err on; a file a failure
// left empty (nothing was created, or nothing written) is removed.
func openOutput(e *env, path string) (io.Writer, func(error) error, error) {
	if path == "" {
		return e.stdout, func(err error) error { return err }, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, nil, fmt.Errorf("--out %s exists: it is not overwritten; name a new file", path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--out: %w", err)
	}
	finish := func(err error) error {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("writing %s: %w", path, cerr)
		}
		if err != nil {
			if st, serr := os.Stat(path); serr == nil && st.Size() == 0 {
				_ = os.Remove(path)
			}
		}
		return err
	}
	return f, finish, nil
}

// caFingerprint returns the SHA-256 fingerprint (lower-case hex of the DER certificate)
// of the CA an agent enrolling at this coordinator URL pins. Over https it is the highest
// CA of the TLS chain this machine verified that the coordinator presents (tlsRoot): the
// certificate the agent's connection must hold and chain to. Over plain http there is no
// chain to see, so it is the root of the coordinator's own CA, from the API. "" (with a
// warning) when there is none.
func (e *env) caFingerprint(ctx context.Context, c *client.Client) (string, error) {
	chain, err := c.CACertificates(ctx)
	var apiErr *client.Error
	if err != nil && !errors.As(err, &apiErr) {
		return "", err // the coordinator cannot be reached: nothing is created
	}
	if u, perr := url.Parse(c.BaseURL()); perr == nil && u.Scheme == "https" {
		if cert, leafOnly := e.tlsSeen.get(); cert != nil {
			if leafOnly {
				e.warnf("the coordinator presents its own certificate without the CA's: the fingerprint pins that certificate, and changes when it is renewed; give the coordinator a tls.cert_file holding its chain")
			}
			sum := sha256.Sum256(cert.Raw)
			return hex.EncodeToString(sum[:]), nil
		}
		e.warnf("no verified TLS chain was seen for %s: no CA fingerprint to print", c.BaseURL())
		return "", nil
	}
	if err != nil || len(chain.Certificates) == 0 {
		why := "it has no CA certificate"
		if err != nil {
			why = err.Error()
		}
		e.warnf("no CA fingerprint to print: %s", why)
		return "", nil
	}
	return chain.Certificates[len(chain.Certificates)-1].SHA256, nil
}

// printCreatedKeys prints created codes or a key: as CSV, JSON or a table, to w. When w
// is a file, standard output says where the secrets went.
func (e *env) printCreatedKeys(w io.Writer, out string, keys client.EnrolmentKeys, fp string, asCSV, asJSON bool) error {
	if len(keys.Items) == 0 {
		return errors.New("the coordinator answered without a code or key")
	}
	var err error
	switch {
	case asJSON:
		err = printJSON(w, createdKeys{EnrolmentKeys: keys, CASHA256: fp})
	case asCSV:
		err = writeSecretsCSV(w, keys.Items)
	default:
		err = e.keysTable(w, keys.Items, fp)
	}
	if err != nil {
		if out != "" {
			return fmt.Errorf("writing %s: %w; the secrets were created: revoke them (tokenfleetctl enrolment-key list, revoke ID)", out, err)
		}
		return err
	}
	what := describeCreated(keys.Items)
	switch {
	case out != "":
		_, err = fmt.Fprintf(e.stdout, "%s written to %s (mode 0600): the coordinator does not show the secrets again\n", what, out)
		if err == nil && fp != "" && !asJSON {
			_, err = fmt.Fprintln(e.stdout, fingerprintLine(fp))
		}
	case asCSV && fp != "":
		// Standard output is the CSV alone: the fingerprint goes beside it.
		fmt.Fprintln(e.stderr, "tokenfleetctl: "+fingerprintLine(fp))
		e.warnf("the secrets above are shown only this once: the coordinator keeps their hashes")
	case !asJSON:
		e.warnf("the secrets above are shown only this once: the coordinator keeps their hashes")
	}
	return err
}

func fingerprintLine(fp string) string {
	return "CA fingerprint (SHA-256): " + fp + " (tokenfleet-agent enrol --ca-fingerprint)"
}

func describeCreated(ks []client.EnrolmentKey) string {
	if ks[0].Kind == client.KindKey {
		return "enrolment key " + clean(ks[0].ID)
	}
	if len(ks) == 1 {
		return "activation code " + clean(ks[0].ID)
	}
	return strconv.Itoa(len(ks)) + " activation codes"
}

// keysTable prints created codes or a key with their secrets, what their agents get, and
// the CA fingerprint.
func (e *env) keysTable(w io.Writer, ks []client.EnrolmentKey, fp string) error {
	k := ks[0]
	var what []string
	if k.Organization != "" {
		what = append(what, "organisation "+k.Organization)
	}
	if len(k.Tags) > 0 {
		what = append(what, "tags "+strings.Join(k.Tags, ","))
	}
	if k.PreApproved {
		what = append(what, "pre-approved")
	} else {
		what = append(what, "agents wait for approval")
	}
	if k.Kind == client.KindKey {
		what = append(what, "uses "+usesText(k))
	}
	if _, err := fmt.Fprintf(w, "%s created (%s)\n", describeCreated(ks), clean(strings.Join(what, "; "))); err != nil {
		return err
	}
	now := e.now()
	t := newTable(w, "ID", "SECRET", "AGENT", "EXPIRES")
	for _, k := range ks {
		t.row(k.ID, k.Secret, k.AgentID, bothTimes(k.Expires, now))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if fp == "" {
		return nil
	}
	_, err := fmt.Fprintln(w, fingerprintLine(fp))
	return err
}

// writeSecretsCSV writes created codes or keys for software distribution: a header, then
// id,secret,agent_id,expires a line (RFC 3339, UTC).
func writeSecretsCSV(w io.Writer, ks []client.EnrolmentKey) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"id", "secret", "agent_id", "expires"}) // errors stay in cw until Flush
	for _, k := range ks {
		_ = cw.Write([]string{k.ID, k.Secret, k.AgentID, timeText(k.Expires)})
	}
	cw.Flush()
	return cw.Error()
}

// usesText is a key's uses against its limit: "3/10", or "3/unlimited".
func usesText(k client.EnrolmentKey) string {
	limit := "unlimited"
	if k.MaxUses > 0 {
		limit = strconv.Itoa(k.MaxUses)
	}
	return strconv.Itoa(k.Uses) + "/" + limit
}

// keyStatus says whether a code or key could enrol an agent at now, and if not why. The
// coordinator decides at enrolment; this is for reading a listing.
func keyStatus(k client.EnrolmentKey, now time.Time) string {
	switch {
	case !k.Revoked.IsZero():
		return "revoked " + timeText(k.Revoked)
	case k.MaxUses > 0 && k.Uses >= k.MaxUses:
		return "used up"
	case !now.Before(k.Expires):
		return "expired"
	}
	return "usable"
}

func enrolmentKeyListCommand(e *env) *cobra.Command {
	var f client.EnrolmentKeyFilter
	cmd := &cobra.Command{
		Use:   "list [--kind code|key] [--usable]",
		Short: "List activation codes and enrolment keys, oldest first, without their secrets (admin, auditor)",
		Args:  exactArgs(),
	}
	lf := addListFlags(cmd, "enrolment keys and codes")
	cmd.Flags().StringVar(&f.Kind, "kind", "", "only codes (code) or only keys (key)")
	cmd.Flags().BoolVar(&f.Usable, "usable", false, "only those that could enrol an agent now")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllEnrolmentKeys(cmd.Context(), f, lf.pageSize()), func(ks []client.EnrolmentKey) error {
			now := e.now()
			t := newTable(e.stdout, "ID", "KIND", "NAME", "ORG", "TAGS", "AGENT", "APPROVAL", "USES", "EXPIRES", "CREATED BY", "STATUS")
			for _, k := range ks {
				approval := "admin"
				if k.PreApproved {
					approval = "pre-approved"
				}
				t.row(k.ID, k.Kind, k.Name, k.Organization, strings.Join(k.Tags, ","), k.AgentID, approval, usesText(k),
					bothTimes(k.Expires, now), k.CreatedBy, keyStatus(k, now))
			}
			return t.flush()
		})
	})
	return cmd
}

func enrolmentKeyRevokeCommand(e *env) *cobra.Command {
	var (
		reason string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "revoke ID [--reason R]",
		Short: "Revoke an activation code or enrolment key (admin): it enrols no more agents; those it enrolled stay",
		Args:  exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			k, err := c.RevokeEnrolmentKey(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, k)
			}
			what := "enrolment key"
			if k.Kind == client.KindCode {
				what = "activation code"
			}
			_, err = fmt.Fprintf(e.stdout, "%s %s revoked at %s (uses %s)\n", what, clean(k.ID), timeText(k.Revoked), usesText(k))
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit log)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the revoked code or key as JSON")
	return cmd
}
