package client

import (
	"context"
	"fmt"
	"iter"
)

// The All* methods walk every page of a list, following next_cursor until it is empty.
// pageSize is the limit asked per page (0: the server's default). A failing page ends the
// sequence with its error; stopping the loop early stops asking for pages.

// AllOrgs yields every organisation.
func (c *Client) AllOrgs(ctx context.Context, pageSize int) iter.Seq2[Org, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]Org, string, error) {
		l, err := c.ListOrgs(ctx, p)
		return l.Items, l.NextCursor, err
	})
}

// AllUsers yields every person f selects.
func (c *Client) AllUsers(ctx context.Context, f UserFilter, pageSize int) iter.Seq2[User, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]User, string, error) {
		l, err := c.ListUsers(ctx, f, p)
		return l.Items, l.NextCursor, err
	})
}

// AllJobs yields every job f selects, newest first.
func (c *Client) AllJobs(ctx context.Context, f JobFilter, pageSize int) iter.Seq2[Job, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]Job, string, error) {
		l, err := c.ListJobs(ctx, f, p)
		return l.Items, l.NextCursor, err
	})
}

// AllAgents yields every agent.
func (c *Client) AllAgents(ctx context.Context, pageSize int) iter.Seq2[Agent, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]Agent, string, error) {
		l, err := c.ListAgents(ctx, p)
		return l.Items, l.NextCursor, err
	})
}

// AllTokens yields every token f selects.
func (c *Client) AllTokens(ctx context.Context, f TokenFilter, pageSize int) iter.Seq2[Token, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]Token, string, error) {
		l, err := c.ListTokens(ctx, f, p)
		return l.Items, l.NextCursor, err
	})
}

// AllCertificates yields every certificate f selects.
func (c *Client) AllCertificates(ctx context.Context, f CertificateFilter, pageSize int) iter.Seq2[Certificate, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]Certificate, string, error) {
		l, err := c.ListCertificates(ctx, f, p)
		return l.Items, l.NextCursor, err
	})
}

// Collect gathers a sequence into a slice, stopping at the first error.
func Collect[T any](seq iter.Seq2[T, error]) ([]T, error) {
	var out []T
	for v, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
	return out, nil
}

// walk follows cursors. A cursor the server already returned would loop forever, so it
// ends the walk with an error instead.
func walk[T any](ctx context.Context, pageSize int, fetch func(context.Context, Page) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		seen := map[string]bool{}
		p := Page{Limit: pageSize}
		for {
			items, next, err := fetch(ctx, p)
			if err != nil {
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			if seen[next] {
				yield(zero, fmt.Errorf("the coordinator returned cursor %q twice; stopping the listing", next))
				return
			}
			seen[next] = true
			p.Cursor = next
		}
	}
}
