package ctl

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
)

func orgCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "org", Short: "Organizations: create, list"}

	var createJSON bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an organisation (admin)",
		Args:  exactArgs("NAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			o, err := c.CreateOrg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if createJSON {
				return printJSON(e.stdout, o)
			}
			_, err = fmt.Fprintf(e.stdout, "organisation %s created (id %s)\n", clean(o.Name), clean(o.ID))
			return err
		}),
	}
	create.Flags().BoolVar(&createJSON, "json", false, "print the created organisation as JSON")

	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List organisations",
		Args:  exactArgs(),
	}
	lf := addListFlags(listCmd, "organisations")
	listCmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllOrgs(cmd.Context(), lf.pageSize()), func(orgs []client.Org) error {
			t := newTable(e.stdout, "NAME", "ID", "CREATED")
			for _, o := range orgs {
				t.row(o.Name, o.ID, timeText(o.Created))
			}
			return t.flush()
		})
	})
	cmd.AddCommand(create, listCmd)
	return cmd
}

func userCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "People: create, list, show, update, disable; issue, list and revoke API tokens; console passwords and identity provider links"}
	cmd.AddCommand(userCreateCommand(e), userListCommand(e), userShowCommand(e), userTokenCommand(e),
		userUpdateCommand(e), userDisableCommand(e, true), userDisableCommand(e, false), userTokensCommand(e), userRevokeTokenCommand(e),
		userPasswordCommand(e), userUnlinkOIDCCommand(e))
	return cmd
}

func userCreateCommand(e *env) *cobra.Command {
	var (
		u      client.UserCreate
		roles  []string
		attrs  []string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "create USERNAME [--name N] [--email E] [--upn U] [--org O] [--role R]... [--attr k=v]... [--language fr|en]",
		Short: "Create a person: a certificate holder, an operator with roles, or both (admin)",
		Long: `Create a person. A certificate holder needs the fields its profiles use (name, email,
UPN, organisation, attributes); an operator needs roles. Roles are cumulative:
` + joinStrings(jobs.AllRoles(), ", ") + `, or custom roles (tokenfleetctl role list).`,
		Args: exactArgs("USERNAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			u.Username = args[0]
			for _, r := range roles {
				role := jobs.Role(strings.TrimSpace(r))
				if !role.WellFormed() {
					return usageErrorf("--role %q: want one of %s, or a custom role's name", r, joinStrings(jobs.AllRoles(), ", "))
				}
				if !slices.Contains(u.Roles, role) {
					u.Roles = append(u.Roles, role)
				}
			}
			for _, a := range attrs {
				k, v, ok := strings.Cut(a, "=")
				if !ok || strings.TrimSpace(k) == "" {
					return usageErrorf("--attr %q: want key=value", a)
				}
				if u.Attributes == nil {
					u.Attributes = map[string]string{}
				}
				if _, dup := u.Attributes[k]; dup {
					return usageErrorf("--attr %s given twice", k)
				}
				u.Attributes[k] = v
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			out, err := c.CreateUser(cmd.Context(), u)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, out)
			}
			_, err = fmt.Fprintf(e.stdout, "user %s created (id %s, organisation %s, roles %s)\n",
				clean(out.Username), clean(out.ID), orNone(out.Organization), orNone(joinStrings(out.Roles, ",")))
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&u.DisplayName, "name", "", "display name")
	f.StringVar(&u.Email, "email", "", "email address")
	f.StringVar(&u.UPN, "upn", "", "user principal name (for smart-card logon)")
	f.StringVar(&u.Organization, "org", "", "organisation name")
	f.StringArrayVar(&roles, "role", nil, "role, repeatable: "+joinStrings(jobs.AllRoles(), ", ")+", or a custom role")
	f.StringArrayVar(&attrs, "attr", nil, "attribute key=value for profile templates, repeatable")
	f.StringVar(&u.Language, "language", "", "language of the person's notifications: fr or en (default: the coordinator's notifications.language)")
	f.BoolVar(&asJSON, "json", false, "print the created user as JSON")
	return cmd
}

func userListCommand(e *env) *cobra.Command {
	var org, role, search string
	cmd := &cobra.Command{
		Use:   "list [--org O] [--role R] [--search TEXT]",
		Short: "List people",
		Args:  exactArgs(),
	}
	lf := addListFlags(cmd, "users")
	cmd.Flags().StringVar(&org, "org", "", "only this organisation")
	cmd.Flags().StringVar(&role, "role", "", "only people with this role")
	cmd.Flags().StringVar(&search, "search", "", "only people whose username, name or e-mail address holds this text (any case)")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		if role != "" && !jobs.Role(role).WellFormed() {
			return usageErrorf("--role %q: want one of %s, or a custom role's name", role, joinStrings(jobs.AllRoles(), ", "))
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		f := client.UserFilter{Organization: org, Role: jobs.Role(role), Search: search}
		return list(e, lf, c.AllUsers(cmd.Context(), f, lf.pageSize()), func(us []client.User) error {
			t := newTable(e.stdout, "USERNAME", "NAME", "ORGANISATION", "ROLES", "EMAIL", "UPN", "STATUS")
			for _, u := range us {
				status := "active"
				if u.Disabled {
					status = "disabled"
				}
				t.row(u.Username, u.DisplayName, u.Organization, joinStrings(u.Roles, ","), u.Email, u.UPN, status)
			}
			return t.flush()
		})
	})
	return cmd
}

func userShowCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show USERNAME",
		Short: "Show one person",
		Args:  exactArgs("USERNAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			u, err := c.GetUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, u)
			}
			return printUser(e, u)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the user as JSON")
	return cmd
}

func printUser(e *env, u client.User) error {
	t := newTable(e.stdout)
	t.row("Username", u.Username)
	t.row("ID", u.ID)
	t.row("Name", u.DisplayName)
	t.row("Email", u.Email)
	t.row("UPN", u.UPN)
	t.row("Organization", u.Organization)
	t.row("Roles", joinStrings(u.Roles, ", "))
	if u.Language != "" { // empty: the coordinator's default
		t.row("Language", u.Language)
	}
	keys := make([]string, 0, len(u.Attributes))
	for k := range u.Attributes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.row("Attribute "+k, u.Attributes[k])
	}
	t.row("Disabled", yesNo(u.Disabled))
	t.row("Created", timeText(u.Created))
	return t.flush()
}

func userTokenCommand(e *env) *cobra.Command {
	var (
		req    client.APITokenCreate
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "token USERNAME [--name N] [--expires 90d]",
		Short: "Issue an API token for a person and print it (manage_users)",
		Long: `Issue an API token for a person. Only the token is printed on standard output, so it
can be captured: TOKEN=$(tokenfleetctl user token alice). The coordinator shows it this
once; it keeps only a hash.`,
		Args: exactArgs("USERNAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if req.ExpiresIn != "" {
				d, err := profile.ParseDuration(req.ExpiresIn)
				if err != nil {
					return usageErrorf("--expires: %v", err)
				}
				if d <= 0 {
					return usageErrorf("--expires must be positive")
				}
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			tok, err := c.CreateAPIToken(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, tok)
			}
			if tok.Token == "" {
				return fmt.Errorf("the coordinator answered without a token")
			}
			_, err = fmt.Fprintln(e.stdout, tok.Token)
			return err
		}),
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "a name for the token, e.g. the machine it is for")
	cmd.Flags().StringVar(&req.ExpiresIn, "expires", "", "lifetime: whole days (90d) or a Go duration (36h); default: the coordinator's api_tokens.default_ttl")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the issued token object as JSON")
	return cmd
}

func whoamiCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show the user the API token belongs to",
		Args:  exactArgs(),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			u, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, u)
			}
			return printUser(e, u)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the user as JSON")
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return clean(s)
}
