package ctl

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

func roleCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "role", Short: "Custom roles: named sets of permissions beside the built-in roles"}
	cmd.AddCommand(roleListCommand(e), roleShowCommand(e), roleSetCommand(e, true), roleSetCommand(e, false), roleDeleteCommand(e))
	return cmd
}

func roleListCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List custom roles",
		Args:  exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			l, err := c.ListRoles(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			t := newTable(e.stdout, "NAME", "ORGANISATION", "PERMISSIONS", "DESCRIPTION")
			for _, r := range l.Items {
				org := r.Organization
				if org == "" {
					org = "(all)"
				}
				t.row(r.Name, org, joinStrings(r.Permissions, ","), r.Description)
			}
			return t.flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the roles as JSON")
	return cmd
}

func roleShowCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one custom role",
		Args:  exactArgs("NAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			r, err := c.GetRole(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			return printRole(e, r)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the role as JSON")
	return cmd
}

func printRole(e *env, r client.CustomRole) error {
	t := newTable(e.stdout)
	org := r.Organization
	if org == "" {
		org = "(all)"
	}
	t.row("Name", r.Name)
	t.row("Description", r.Description)
	t.row("Organization", org)
	t.row("Permissions", joinStrings(r.Permissions, ", "))
	t.row("Created", timeText(r.Created))
	t.row("Updated", timeText(r.Updated))
	return t.flush()
}

// roleSetCommand is role create (create) or role update.
func roleSetCommand(e *env, create bool) *cobra.Command {
	var (
		spec   client.CustomRoleSpec
		perms  []string
		asJSON bool
	)
	use, short := "update", "Replace a custom role's permissions, organisation and description (manage_users)"
	if create {
		use, short = "create", "Create a custom role (manage_users)"
	}
	cmd := &cobra.Command{
		Use:   use + " NAME --permission P... [--org O] [--description D]",
		Short: short,
		Long: short + `. Permissions: ` + joinStrings(jobs.AllPermissions(), ", ") + `.
A role with --org grants its permissions on that organisation's jobs and holders only, and
may then hold only request, approve, ca_operator, manage_jobs and read. Giving a role a
permission needs holding it yourself. Assign it like a built-in role
(tokenfleetctl user update USER --add-role NAME); name it in a profile's approval.roles to
let its holders decide at that gate (it needs approve).`,
		Args: exactArgs("NAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			for _, p := range perms {
				for _, one := range strings.Split(p, ",") {
					perm := jobs.Permission(strings.TrimSpace(one))
					if !perm.Valid() {
						return usageErrorf("--permission %q: want one of %s", one, joinStrings(jobs.AllPermissions(), ", "))
					}
					spec.Permissions = append(spec.Permissions, perm)
				}
			}
			if len(spec.Permissions) == 0 {
				return usageErrorf("--permission is required: one or more of %s", joinStrings(jobs.AllPermissions(), ", "))
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			var r client.CustomRole
			if create {
				spec.Name = args[0]
				r, err = c.CreateRole(cmd.Context(), spec)
			} else {
				r, err = c.UpdateRole(cmd.Context(), args[0], spec)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			return printRole(e, r)
		}),
	}
	f := cmd.Flags()
	f.StringArrayVar(&perms, "permission", nil, "permission, repeatable or comma-separated")
	f.StringVar(&spec.Organization, "org", "", "limit the role to this organisation")
	f.StringVar(&spec.Description, "description", "", "what the role is for")
	f.BoolVar(&asJSON, "json", false, "print the role as JSON")
	return cmd
}

func roleDeleteCommand(e *env) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "delete NAME [--reason R]",
		Short: "Delete a custom role nobody holds and no profile's gate names (manage_users)",
		Args:  exactArgs("NAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			if err := c.DeleteRole(cmd.Context(), args[0], reason); err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "role %s deleted\n", clean(args[0]))
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}
