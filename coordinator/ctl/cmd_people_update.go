package ctl

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

func userUpdateCommand(e *env) *cobra.Command {
	var (
		name, email, upn, org string
		language              string
		attrs, roles          []string
		addRoles, rmRoles     []string
		clearAttrs, noRoles   bool
		asJSON                bool
	)
	cmd := &cobra.Command{
		Use:   "update USERNAME [--name N] [--email E] [--upn U] [--org O] [--attr k=v]... [--role R]... [--add-role R] [--remove-role R] [--language fr|en]",
		Short: "Change a person's fields or roles (manage_users); what is not given stays",
		Long: `Change a person. Only the flags given change anything; an empty value clears a field
(--org "" takes the person out of their organisation). --attr replaces the attributes
whole; --role replaces the roles whole, --add-role and --remove-role change them one by
one. Every change is audited with its value before and after.`,
		Args: exactArgs("USERNAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			var u client.UserUpdate
			fl := cmd.Flags()
			if fl.Changed("name") {
				u.DisplayName = &name
			}
			if fl.Changed("email") {
				u.Email = &email
			}
			if fl.Changed("upn") {
				u.UPN = &upn
			}
			if fl.Changed("org") {
				u.Organization = &org
			}
			if fl.Changed("language") {
				u.Language = &language
			}
			if len(attrs) > 0 || clearAttrs {
				m := map[string]string{}
				for _, a := range attrs {
					k, v, ok := strings.Cut(a, "=")
					if !ok || strings.TrimSpace(k) == "" {
						return usageErrorf("--attr %q: want key=value", a)
					}
					if _, dup := m[k]; dup {
						return usageErrorf("--attr %s given twice", k)
					}
					m[k] = v
				}
				u.Attributes = &m
			}
			replace := len(roles) > 0 || noRoles
			if replace && (len(addRoles) > 0 || len(rmRoles) > 0) {
				return usageErrorf("--role replaces the roles whole: give it, or --add-role and --remove-role, not both")
			}
			for _, r := range slices.Concat(roles, addRoles, rmRoles) {
				if !jobs.Role(r).WellFormed() {
					return usageErrorf("role %q: want one of %s, or a custom role's name", r, joinStrings(jobs.AllRoles(), ", "))
				}
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			if len(addRoles) > 0 || len(rmRoles) > 0 {
				cur, err := c.GetUser(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				next := slices.Clone(cur.Roles)
				for _, r := range addRoles {
					if !slices.Contains(next, jobs.Role(r)) {
						next = append(next, jobs.Role(r))
					}
				}
				next = slices.DeleteFunc(next, func(r jobs.Role) bool { return slices.Contains(rmRoles, string(r)) })
				u.Roles = &next
			} else if replace {
				next := []jobs.Role{}
				for _, r := range roles {
					if !slices.Contains(next, jobs.Role(r)) {
						next = append(next, jobs.Role(r))
					}
				}
				u.Roles = &next
			}
			if u == (client.UserUpdate{}) {
				return usageErrorf("nothing to change: give at least one of --name, --email, --upn, --org, --attr, --role, --add-role, --remove-role, --language")
			}
			out, err := c.UpdateUser(cmd.Context(), args[0], u)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, out)
			}
			return printUser(e, out)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "display name")
	f.StringVar(&email, "email", "", "email address")
	f.StringVar(&upn, "upn", "", "user principal name")
	f.StringVar(&org, "org", "", "organisation name (\"\" for none)")
	f.StringVar(&language, "language", "", "language of the person's notifications: fr or en (\"\" for the coordinator's default)")
	f.StringArrayVar(&attrs, "attr", nil, "attribute key=value, repeatable: replaces the attributes whole")
	f.BoolVar(&clearAttrs, "clear-attrs", false, "remove every attribute")
	f.StringArrayVar(&roles, "role", nil, "role, repeatable: replaces the roles whole")
	f.BoolVar(&noRoles, "no-roles", false, "remove every role")
	f.StringArrayVar(&addRoles, "add-role", nil, "give a role, repeatable")
	f.StringArrayVar(&rmRoles, "remove-role", nil, "take a role, repeatable")
	f.BoolVar(&asJSON, "json", false, "print the user as JSON")
	return cmd
}

func userDisableCommand(e *env, disable bool) *cobra.Command {
	var reason string
	use, short := "enable", "Enable a disabled person again (manage_users)"
	if disable {
		use, short = "disable", "Disable a person (manage_users): their API tokens stop working at once, they decide nothing and hold no new job"
	}
	cmd := &cobra.Command{
		Use:   use + " USERNAME --reason R",
		Short: short,
		Args:  exactArgs("USERNAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("--reason is required: say why, for the audit log")
			}
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			u, err := c.SetUserDisabled(cmd.Context(), args[0], disable, reason)
			if err != nil {
				return err
			}
			state := "enabled"
			if u.Disabled {
				state = "disabled"
			}
			_, err = fmt.Fprintf(e.stdout, "user %s %s\n", clean(u.Username), state)
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}

func userTokensCommand(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tokens USERNAME",
		Short: "List a person's API tokens: your own, or anyone's with manage_users",
		Args:  exactArgs("USERNAME"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			l, err := c.ListAPITokens(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			t := newTable(e.stdout, "ID", "NAME", "CREATED", "EXPIRES", "LAST USED", "REVOKED")
			for _, tok := range l.Items {
				expires := timeText(tok.Expires)
				if tok.Expires.IsZero() {
					expires = "never"
					if tok.Bootstrap {
						expires = "never (bootstrap)"
					}
				}
				lastUsed := "never"
				if !tok.LastUsed.IsZero() {
					lastUsed = timeText(tok.LastUsed)
				}
				revoked := "-"
				if !tok.Revoked.IsZero() {
					revoked = timeText(tok.Revoked)
				}
				t.row(tok.ID, tok.Name, timeText(tok.Created), expires, lastUsed, revoked)
			}
			return t.flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the tokens as JSON")
	return cmd
}

func userRevokeTokenCommand(e *env) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke-token TOKEN_ID [--reason R]",
		Short: "Revoke an API token at once: your own, or anyone's with manage_users",
		Long: `Revoke an API token by its ID (the ID column of "tokenfleetctl user tokens", the part of
the token after tfk_ up to the next _). It is refused from then on.`,
		Args: exactArgs("TOKEN_ID"),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.newClient(e.conn)
			if err != nil {
				return err
			}
			tok, err := c.RevokeAPIToken(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "API token %s (%s of %s) revoked\n", clean(tok.ID), clean(tok.Name), clean(tok.Username))
			return err
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}
