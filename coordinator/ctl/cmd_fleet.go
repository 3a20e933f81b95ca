package ctl

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
)

func agentsCommand(e *env) *cobra.Command {
	var (
		f                        client.AgentFilter
		pending, online, offline bool
	)
	cmd := &cobra.Command{
		Use:   "agents [--pending | --state S] [--online | --offline] [--search TEXT]",
		Short: "List agents with their life-cycle state and presence",
		Long: `List agents with their life-cycle state and presence. States: pending (enrolled with a
key held for approval: tokenfleetctl agent approve ID), active, disabled (agent enable ID
makes it active again) and removed.`,
		Args: exactArgs(),
	}
	lf := addListFlags(cmd, "agents")
	cmd.Flags().BoolVar(&pending, "pending", false, "only agents waiting for an administrator's approval (--state pending)")
	cmd.Flags().StringVar(&f.State, "state", "", "only agents in this state: pending, active, disabled or removed")
	cmd.Flags().BoolVar(&online, "online", false, "only agents online now")
	cmd.Flags().BoolVar(&offline, "offline", false, "only agents offline now")
	cmd.Flags().StringVar(&f.Search, "search", "", "only agents whose ID or hostname holds this text (any case)")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		if online && offline {
			return usageErrorf("--online and --offline exclude each other: pass one of them")
		}
		if online || offline {
			f.Online = &online
		}
		if pending {
			if f.State != "" && f.State != client.AgentPending {
				return usageErrorf("--pending is --state pending: pass one of them")
			}
			f.State = client.AgentPending
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllAgentsBy(cmd.Context(), f, lf.pageSize()), func(as []client.Agent) error {
			now := e.now()
			t := newTable(e.stdout, "ID", "HOSTNAME", "OS", "VERSION", "STATE", "PRESENCE", "LAST SEEN", "TAGS", "ENROLLED")
			for _, a := range as {
				presence := "offline"
				if a.Online {
					presence = "online"
				}
				t.row(a.ID, a.Hostname, a.OS, a.Version, a.State, presence, relText(a.LastSeen, now), strings.Join(a.Tags, ","), timeText(a.Enrolled))
			}
			if err := t.flush(); err != nil {
				return err
			}
			return refusalNotes(e, as, now)
		})
	})
	return cmd
}

// refusalNotes explains, under the table, the agents whose latest messages were refused:
// such an agent runs but shows offline. A refusal older than the agent's last accepted
// message is left to --json and the audit log: it no longer explains anything. The
// sender is named because anyone may claim an agent's ID.
func refusalNotes(e *env, as []client.Agent, now time.Time) error {
	for _, a := range as {
		r := a.LastRefusal
		if r.At.IsZero() || r.At.Before(a.LastSeen) {
			continue
		}
		sender := "no broker user"
		if r.Sender != "" {
			sender = "broker user " + clean(r.Sender)
		}
		if _, err := fmt.Fprintf(e.stdout, "%s: messages claiming to be this agent are refused (%s, %s, sent by %s): %s\n",
			clean(a.ID), clean(r.Code), relText(r.At, now), sender, clean(r.Reason)); err != nil {
			return err
		}
	}
	return nil
}

func tokensCommand(e *env) *cobra.Command {
	var f client.TokenFilter
	cmd := &cobra.Command{
		Use:   "tokens [--agent A] [--holder H] [--model TEXT] [--search TEXT]",
		Short: "List tokens as last reported by agents",
		Args:  exactArgs(),
	}
	lf := addListFlags(cmd, "tokens")
	cmd.Flags().StringVar(&f.Agent, "agent", "", "only tokens last seen on this agent")
	cmd.Flags().StringVar(&f.Holder, "holder", "", "only tokens carrying one of this holder's certificates (username)")
	cmd.Flags().StringVar(&f.Model, "model", "", "only tokens whose model or manufacturer holds this text (any case)")
	cmd.Flags().StringVar(&f.Search, "search", "", "only tokens whose serial or label holds this text (any case)")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllTokens(cmd.Context(), f, lf.pageSize()), func(ts []client.Token) error {
			now := e.now()
			t := newTable(e.stdout, "SERIAL", "AGENT", "LABEL", "MANUFACTURER", "MODEL", "STATE", "LAST SEEN")
			for _, tok := range ts {
				state := tok.State
				if state == "" {
					state = "active" // a coordinator without the token life cycle
				}
				t.row(tok.Serial, tok.Agent, tok.Label, tok.Manufacturer, tok.Model, state, relText(tok.LastSeen, now))
			}
			return t.flush()
		})
	})
	return cmd
}

func certsCommand(e *env) *cobra.Command {
	var (
		f              client.CertificateFilter
		revoked, valid bool
		expiring       string
	)
	cmd := &cobra.Command{
		Use:   "certs [--holder H] [--agent A] [--token S] [--profile P] [--revoked | --valid] [--expiring SPAN]",
		Short: "List certificates issued or installed",
		Args:  exactArgs(),
	}
	lf := addListFlags(cmd, "certificates")
	cmd.Flags().StringVar(&f.Holder, "holder", "", "only this holder's certificates (username)")
	cmd.Flags().StringVar(&f.Agent, "agent", "", "only certificates installed through this agent")
	cmd.Flags().StringVar(&f.Token, "token", "", "only certificates on this token (serial)")
	cmd.Flags().StringVar(&f.Profile, "profile", "", "only certificates of this profile")
	cmd.Flags().BoolVar(&revoked, "revoked", false, "only revoked certificates")
	cmd.Flags().BoolVar(&valid, "valid", false, "only certificates not revoked")
	cmd.Flags().StringVar(&expiring, "expiring", "", "only certificates whose validity ends within this span from now (30d, 72h)")
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(cmd); err != nil {
			return err
		}
		if revoked && valid {
			return usageErrorf("--revoked and --valid exclude each other: pass one of them")
		}
		if revoked || valid {
			f.Revoked = &revoked
		}
		if expiring != "" {
			d, err := profile.ParseDuration(expiring)
			if err != nil || d <= 0 {
				return usageErrorf("--expiring %q: want a span from now such as 30d or 72h", expiring)
			}
			f.ExpiresBefore = e.now().UTC().Add(time.Duration(d))
		}
		c, err := e.newClient(e.conn)
		if err != nil {
			return err
		}
		return list(e, lf, c.AllCertificates(cmd.Context(), f, lf.pageSize()), func(cs []client.Certificate) error {
			now := e.now()
			t := newTable(e.stdout, "SERIAL", "HOLDER", "PROFILE", "SUBJECT", "TOKEN", "NOT AFTER", "STATUS")
			for _, c := range cs {
				status := "valid"
				switch {
				case !c.RevokedAt.IsZero():
					status = "revoked " + timeText(c.RevokedAt)
				case !c.NotAfter.IsZero() && now.After(c.NotAfter):
					status = "expired"
				case !c.NotBefore.IsZero() && now.Before(c.NotBefore):
					status = "not yet valid"
				}
				t.row(c.Serial, c.Holder, c.Profile, c.Subject, c.TokenSerial, timeText(c.NotAfter), status)
			}
			return t.flush()
		})
	})
	return cmd
}
