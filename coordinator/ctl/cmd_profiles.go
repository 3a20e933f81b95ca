package ctl

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// maxProfileBytes bounds a profile document read from a file or standard input.
const maxProfileBytes = 1 << 20

func profileCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "profile", Short: "Issuance profiles: apply, list, show"}

	var applyJSON bool
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Create or replace the profiles of a YAML file (admin); - reads standard input",
		Long: `Create or replace the profiles of a YAML file (admin). The coordinator checks every
profile first: when one is invalid it names the field and stores nothing.`,
		Args: exactArgs("FILE"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			doc, err := e.readInput(args[0])
			if err != nil {
				return err
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			l, err := c.ApplyProfiles(cmd.Context(), doc)
			if err != nil {
				return err
			}
			if applyJSON {
				return printJSON(e.stdout, nonNil(l.Items))
			}
			return printProfiles(e, l.Items)
		}),
	}
	apply.Flags().BoolVar(&applyJSON, "json", false, "print the applied profiles as a JSON array")

	var listJSON bool
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List profiles",
		Args:  exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			l, err := c.ListProfiles(cmd.Context())
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(e.stdout, nonNil(l.Items))
			}
			if len(l.Items) == 0 {
				_, err = fmt.Fprintln(e.stdout, "no profiles")
				return err
			}
			return printProfiles(e, l.Items)
		}),
	}
	listCmd.Flags().BoolVar(&listJSON, "json", false, "print a JSON array of the API's objects")

	var showJSON bool
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Print a profile's YAML as stored",
		Args:  exactArgs("NAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			p, err := c.GetProfile(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if showJSON {
				return printJSON(e.stdout, p)
			}
			fmt.Fprintf(e.stdout, "# %s version %d, hash %s, updated %s by %s\n",
				clean(p.Name), p.Version, clean(p.Hash), timeText(p.Updated), clean(p.UpdatedBy))
			_, err = io.WriteString(e.stdout, p.YAML)
			return err
		}),
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print the profile as JSON")

	cmd.AddCommand(apply, listCmd, show)
	return cmd
}

func printProfiles(e *env, ps []client.Profile) error {
	t := newTable(e.stdout, "NAME", "VERSION", "KEY", "APPROVALS", "CA GATE", "UPDATED", "BY", "DESCRIPTION")
	for _, p := range ps {
		t.row(p.Name, strconv.FormatInt(p.Version, 10), p.Key, strconv.Itoa(p.ApprovalsRequired),
			yesNo(p.CAOperatorRequired), timeText(p.Updated), p.UpdatedBy, p.Description)
	}
	return t.flush()
}

// readInput reads a file, or standard input for "-".
func (e *env) readInput(path string) ([]byte, error) {
	r := e.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxProfileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > maxProfileBytes {
		return nil, fmt.Errorf("%s is larger than %d KiB", path, maxProfileBytes>>10)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return data, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
