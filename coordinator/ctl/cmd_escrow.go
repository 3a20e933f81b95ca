package ctl

import (
	"bufio"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

func escrowCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "escrow",
		Short: "Escrowed encryption keys: list them, and ask for one to be recovered",
	}
	cmd.AddCommand(escrowListCommand(e), escrowRecoverCommand(e))
	return cmd
}

func escrowListCommand(e *env) *cobra.Command {
	var holder, token string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list (--holder USER | --token SERIAL)",
		Short: "List the escrowed keys of a holder or a token, with their state and where a recovery put them",
		Args:  exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if holder == "" && token == "" {
				return usageErrorf("name a holder (--holder) or a token (--token)")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			l, err := c.ListEscrowedKeys(cmd.Context(), holder, token)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			t := newTable(e.stdout, "ID", "HOLDER", "TOKEN", "STATE", "CERTIFICATE", "KEY ID", "RECOVERED TO")
			for _, k := range l.Items {
				t.row(k.ID, k.Holder, k.TokenSerial, k.State, k.CertificateSerial, k.KeyID, k.RecoveredTo)
			}
			return t.flush()
		}),
	}
	cmd.Flags().StringVar(&holder, "holder", "", "the holder's username")
	cmd.Flags().StringVar(&token, "token", "", "a token serial")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the keys as JSON")
	return cmd
}

func escrowRecoverCommand(e *env) *cobra.Command {
	var agent, token, reason string
	var officer, asJSON bool
	cmd := &cobra.Command{
		Use:   "recover KEY_ID (--token SERIAL --agent AGENT | --officer) --reason R",
		Short: "Queue the recovery of an escrowed key onto a token, or as a PKCS#12 for an officer",
		Long: `Queue the recovery of an escrowed key (request or recover_keys). It waits for the
approvals of key-recovery officers (tokenfleetctl approve JOB; never the requester's), then
for an officer to open the archive on their own machine: tokenfleetctl recovery open JOB.`,
		Args: exactArgs("KEY_ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			r := client.RecoveryCreate{Agent: agent, TokenSerial: token, Reason: reason}
			switch {
			case reason == "":
				return usageErrorf("--reason is required: the officers approve it, and the audit log keeps it")
			case officer && (agent != "" || token != ""):
				return usageErrorf("--officer delivers a PKCS#12 to an officer: give no --token or --agent")
			case officer:
				r.Target = "officer"
			case agent == "" || token == "":
				return usageErrorf("give the token to install the key on (--token SERIAL --agent AGENT), or --officer")
			default:
				r.Target = "token"
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			j, err := c.RecoverEscrowedKey(cmd.Context(), args[0], r)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, j)
			}
			_, err = fmt.Fprintf(e.stdout, "recovery job %s queued: %s, approvals %s (key-recovery officers)\n", j.ID, j.State, j.Approvals)
			return err
		}),
	}
	cmd.Flags().StringVar(&agent, "agent", "", "the agent of the token to install the key on")
	cmd.Flags().StringVar(&token, "token", "", "the token to install the key on (normally the replacement of the lost one)")
	cmd.Flags().BoolVar(&officer, "officer", false, "deliver the key as a password-protected PKCS#12 to an officer instead")
	cmd.Flags().StringVar(&reason, "reason", "", "why (shown to the officers, kept in the audit log)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the job as JSON")
	return cmd
}

func recoveryCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "recovery",
		Short: "Key-recovery officers: open an approved recovery with a recovery key, on this machine",
	}
	cmd.AddCommand(recoveryOpenCommand(e))
	return cmd
}

// maxRecoveryKeyFile bounds the PEM file of a recovery private key.
const maxRecoveryKeyFile = 64 << 10

func recoveryOpenCommand(e *env) *cobra.Command {
	var keyFile, p12File, passwordFile string
	cmd := &cobra.Command{
		Use:   "open JOB --recovery-key KEY.pem [--pkcs12 OUT.p12 [--password-file F]]",
		Short: "Open an approved recovery's archive with a recovery private key, here, and deliver the key (recover_keys)",
		Long: `Open an approved recovery's archive with the private key of a recovery certificate, on
this machine: the coordinator never sees the key. The recovered key is checked against the
archived public key and certificate, then:
  - for a recovery onto a token, sealed to the target agent's key for this job and attempt
    and posted: the coordinator sends it to the agent with the token's user PIN;
  - for a recovery to an officer (--pkcs12), written as a password-protected PKCS#12 file
    (AES-256, PBKDF2), the password asked twice at the terminal without echo or read from
    the first line of --password-file; the coordinator is told it was delivered.
The recovery key is a PEM file (PKCS#8, or SEC 1 / PKCS#1), not encrypted. A key held on an
HSM or token would be opened the same way through PKCS#11; that is not built.`,
		Args: exactArgs("JOB"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return usageErrorf("--recovery-key is required: the PEM private key of a recovery certificate")
			}
			if passwordFile != "" && p12File == "" {
				return usageErrorf("--password-file goes with --pkcs12")
			}
			recKey, err := readRecoveryKey(keyFile)
			if err != nil {
				return err
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ra, err := c.RecoveryArchive(ctx, args[0])
			if err != nil {
				return err
			}
			switch {
			case ra.Target == "token" && p12File != "":
				return usageErrorf("job %s installs the key on token %s: it is not written as a PKCS#12 (leave out --pkcs12)", ra.JobID, ra.TokenSerial)
			case ra.Target == "officer" && p12File == "":
				return usageErrorf("job %s delivers the key to an officer: give --pkcs12 OUT.p12", ra.JobID)
			}
			a, err := escrow.Unmarshal(ra.Archive)
			if err != nil {
				return err
			}
			priv, err := escrow.Open(a, recKey)
			if err != nil {
				return fmt.Errorf("opening the archive of escrowed key %s: %w", ra.EscrowedKey, err)
			}
			var d client.RecoveryDelivery
			if ra.Target == "token" {
				if d.PrivateKey, err = sealForAgent(priv, ra); err != nil {
					return err
				}
			} else {
				if err := e.writePKCS12(p12File, passwordFile, priv, a.Certificate); err != nil {
					return err
				}
				d.PKCS12 = true
			}
			j, err := c.DeliverRecovery(ctx, ra.JobID, d)
			if err != nil {
				if d.PKCS12 {
					return fmt.Errorf("%s was written, but the coordinator was not told: %w", p12File, err)
				}
				return err
			}
			if d.PKCS12 {
				_, err = fmt.Fprintf(e.stdout, "escrowed key %s of %s written to %s; job %s %s\n", ra.EscrowedKey, clean(ra.Holder), p12File, j.ID, j.State)
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "escrowed key %s of %s sealed to agent %s for token %s; job %s goes to the agent\n",
				ra.EscrowedKey, clean(ra.Holder), ra.Agent, ra.TokenSerial, j.ID)
			return err
		}),
	}
	cmd.Flags().StringVar(&keyFile, "recovery-key", "", "PEM private key of a recovery certificate")
	cmd.Flags().StringVar(&p12File, "pkcs12", "", "write the key and certificate to this new PKCS#12 file (a recovery to an officer)")
	cmd.Flags().StringVar(&passwordFile, "password-file", "", "read the PKCS#12 password from the first line of this file instead of the terminal")
	return cmd
}

// readRecoveryKey reads a recovery private key from a PEM file.
func readRecoveryKey(path string) (crypto.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, maxRecoveryKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer clear(data)
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, usageErrorf("%s holds no PEM block: give the recovery certificate's private key in PEM", path)
	}
	defer clear(b.Bytes)
	switch b.Type {
	case "PRIVATE KEY":
		return x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, usageErrorf("%s is encrypted: decrypt it to a protected file first (openssl pkey -in %s -out KEY.pem)", path, path)
	}
	return nil, usageErrorf("%s holds a %q PEM block, not a private key", path, b.Type)
}

// sealForAgent seals the recovered key to the target agent for the recovery's job and
// attempt, as the coordinator seals PINs; the plaintext is cleared.
func sealForAgent(priv crypto.Signer, ra client.RecoveryArchive) (*protocol.Sealed, error) {
	to, err := seal.ParsePublicKey(ra.AgentSealKey)
	if err != nil {
		return nil, fmt.Errorf("agent %s's seal key: %w", ra.Agent, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	return seal.Seal(to, der, seal.Binding{JobID: ra.JobID, Attempt: uint32(ra.Attempt), Purpose: ra.Purpose})
}

// writePKCS12 writes key and certificate to a new file as a PKCS#12 (the go-pkcs12 Modern
// encoder: AES-256-CBC with PBKDF2, SHA-256 MAC), protected by a password read from a file or
// the terminal.
func (e *env) writePKCS12(path, passwordFile string, priv crypto.Signer, certDER []byte) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("the archived certificate: %w", err)
	}
	var pw string
	if passwordFile != "" {
		f, err := os.Open(passwordFile)
		if err != nil {
			return err
		}
		pw, err = readLine(bufio.NewReaderSize(io.LimitReader(f, maxPasswordInput), maxPasswordInput))
		_ = f.Close()
		if err != nil {
			return err
		}
		if pw == "" {
			return usageErrorf("%s: the first line is empty; write the PKCS#12 password there", passwordFile)
		}
	} else {
		if !e.isTerminal(e.stdin) {
			return usageErrorf("the PKCS#12 password is asked at a terminal; without one, give --password-file")
		}
		if pw, err = e.askTwice("PKCS#12 password for " + path + ": "); err != nil {
			return err
		}
	}
	data, err := pkcs12.Modern.Encode(priv, cert, nil, pw)
	if err != nil {
		return fmt.Errorf("encoding the PKCS#12: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return usageErrorf("%s exists: give a new file, nothing is overwritten", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// askTwice reads a new secret at the terminal, twice, without echo.
func (e *env) askTwice(prompt string) (string, error) {
	in := bufio.NewReaderSize(io.LimitReader(e.stdin, maxPasswordInput), maxPasswordInput)
	restore, err := withoutEcho(e.stdin)
	if err != nil {
		return "", fmt.Errorf("turning the terminal's echo off: %w", err)
	}
	defer restore()
	ask := func(p string) (string, error) {
		fmt.Fprint(e.stderr, p)
		s, err := readLine(in)
		fmt.Fprintln(e.stderr)
		return s, err
	}
	pw, err := ask(prompt)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(pw) == "" {
		return "", usageErrorf("no password given")
	}
	again, err := ask("Again: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", usageErrorf("the two passwords differ; nothing was written")
	}
	return pw, nil
}
