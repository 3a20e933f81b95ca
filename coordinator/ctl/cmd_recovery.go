package ctl

import (
	"fmt"

	"github.com/spf13/cobra"
)

func recoveryCertCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "recovery-cert",
		Short: "Recovery certificates: the organisation's backup keys, to which escrowed encryption keys are sealed",
	}
	cmd.AddCommand(recoveryCertListCommand(e), recoveryCertAddCommand(e), recoveryCertRetireCommand(e))
	return cmd
}

func recoveryCertListCommand(e *env) *cobra.Command {
	var asJSON, all bool
	cmd := &cobra.Command{
		Use:   "list [--all]",
		Short: "List the recovery certificates with their CN and expiry, those in use first",
		Args:  exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			l, err := c.ListRecoveryCertificates(cmd.Context(), all)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			t := newTable(e.stdout, "ID", "COMMON NAME", "EXPIRES", "KEY ID", "STATE")
			for _, r := range l.Items {
				state := "in use"
				if !r.Retired.IsZero() {
					state = "retired " + timeText(r.Retired)
				}
				t.row(r.ID, r.CommonName, timeText(r.NotAfter), r.KeyID, state)
			}
			return t.flush()
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, "list the retired certificates too")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the certificates as JSON")
	return cmd
}

func recoveryCertAddCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add FILE",
		Short: "Add a recovery certificate from a PEM file (\"-\": standard input) (manage_profiles)",
		Long: `Add a recovery certificate from a PEM file ("-": standard input) (manage_profiles).
The certificate's key is RSA of 2048 bits or more (keyEncipherment), or EC on P-256 or P-384
(keyAgreement). Its private half stays with the key-recovery officers, outside the
coordinator: escrowed encryption keys are sealed to every recovery certificate in use.`,
		Args: exactArgs("FILE"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			data, err := e.readInput(args[0])
			if err != nil {
				return err
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			r, err := c.AddRecoveryCertificate(cmd.Context(), string(data))
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			_, err = fmt.Fprintf(e.stdout, "recovery certificate %s added: %s, expires %s, key %s\n",
				r.ID, clean(r.CommonName), timeText(r.NotAfter), r.KeyID)
			return err
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the certificate as JSON")
	return cmd
}

func recoveryCertRetireCommand(e *env) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "retire ID --reason R",
		Short: "Retire a recovery certificate: nothing new is sealed to it (manage_profiles)",
		Args:  exactArgs("ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return usageErrorf("--reason is required: say why the recovery certificate is retired")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			r, err := c.RetireRecoveryCertificate(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "recovery certificate %s (%s) retired\n", r.ID, clean(r.CommonName))
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}
