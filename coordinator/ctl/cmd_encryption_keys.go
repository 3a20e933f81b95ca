package ctl

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

func encryptionKeyCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "encryption-key",
		Short: "Holders' encryption keys: the certificates applications encrypt to",
	}
	cmd.AddCommand(encryptionKeyListCommand(e))
	return cmd
}

func encryptionKeyListCommand(e *env) *cobra.Command {
	var holder, token string
	var asJSON, asPEM bool
	cmd := &cobra.Command{
		Use:   "list --holder USER [--token SERIAL] [--json | --pem]",
		Short: "List a holder's encryption keys; --pem prints the current one's certificate",
		Long: `List a holder's encryption keys (escrowed or registered), oldest first, with the one
to encrypt to now marked current. --pem prints only the current key's certificate, for
piping into openssl:

  tokenfleetctl encryption-key list --holder alice --pem > alice.pem
  openssl cms -encrypt -aes256 -in tender.pdf -recip alice.pem -out tender.p7m`,
		Args: exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if holder == "" {
				return usageErrorf("name the holder (--holder USER)")
			}
			if asJSON && asPEM {
				return usageErrorf("--json and --pem print different things: give one")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			l, err := c.ListEncryptionKeys(cmd.Context(), holder, token)
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return printJSON(e.stdout, l)
			case asPEM:
				for _, k := range l.Items {
					if k.Current {
						_, err := io.WriteString(e.stdout, k.Certificate)
						return err
					}
				}
				return fmt.Errorf("%s has no current encryption key (%d listed, none valid and unrevoked): queue a server_keygen or register_certificate job", clean(holder), len(l.Items))
			}
			t := newTable(e.stdout, "ID", "SOURCE", "TOKEN", "CERTIFICATE", "SUBJECT", "NOT AFTER", "KEY ID", "CURRENT")
			for _, k := range l.Items {
				cur := "yes"
				if !k.Current {
					cur = "no: " + k.NotCurrent
				}
				na := ""
				if !k.NotAfter.IsZero() {
					na = k.NotAfter.UTC().Format(time.RFC3339)
				}
				t.row(k.ID, k.Source, k.TokenSerial, k.CertificateSerial, k.Subject, na, k.KeyID, cur)
			}
			return t.flush()
		}),
	}
	cmd.Flags().StringVar(&holder, "holder", "", "the holder's username")
	cmd.Flags().StringVar(&token, "token", "", "only the keys on this token")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the keys as JSON")
	cmd.Flags().BoolVar(&asPEM, "pem", false, "print the current key's certificate (PEM) only")
	return cmd
}
