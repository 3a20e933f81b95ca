package ctl

import (
	"fmt"
	"iter"

	"github.com/spf13/cobra"
)

// maxPageSize is the largest page the API serves for lists.
const maxPageSize = 500

// listFlags are the flags every listing has.
type listFlags struct {
	limit  int
	all    bool
	asJSON bool
	what   string // "jobs", for messages
}

func addListFlags(cmd *cobra.Command, what string) *listFlags {
	l := &listFlags{what: what}
	cmd.Flags().IntVar(&l.limit, "limit", 50, "show at most this many "+what)
	cmd.Flags().BoolVar(&l.all, "all", false, "show every one of the "+what+", walking all pages")
	cmd.Flags().BoolVar(&l.asJSON, "json", false, "print a JSON array of the API's objects")
	return l
}

func (l *listFlags) check(cmd *cobra.Command) error {
	if l.all && cmd.Flags().Changed("limit") {
		return usageErrorf("pass --all or --limit, not both")
	}
	if l.limit < 1 {
		return usageErrorf("--limit must be at least 1")
	}
	return nil
}

// pageSize asks for one item beyond the limit, so one request also says whether more are
// left.
func (l *listFlags) pageSize() int {
	if l.all {
		return maxPageSize
	}
	return min(l.limit+1, maxPageSize)
}

func (l *listFlags) max() int {
	if l.all {
		return 0
	}
	return l.limit
}

// list reads what seq yields within the flags' limit, prints it as JSON or with human,
// and says on standard error when more were left out.
func list[T any](e *env, l *listFlags, seq iter.Seq2[T, error], human func([]T) error) error {
	items, more, err := take(seq, l.max())
	if err != nil {
		return err
	}
	if l.asJSON {
		if items == nil {
			items = []T{}
		}
		err = printJSON(e.stdout, items)
	} else if len(items) == 0 {
		_, err = fmt.Fprintf(e.stdout, "no %s\n", l.what)
	} else {
		err = human(items)
	}
	if err != nil {
		return err
	}
	if more {
		fmt.Fprintf(e.stderr, "tokenfleetctl: only the first %d %s are shown; pass --all or a higher --limit\n", len(items), l.what)
	}
	return nil
}
