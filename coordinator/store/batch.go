package store

import (
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// batchRows bounds the rows one set-based statement names or inserts, so that its
// placeholders (a dozen a row at most) stay far below the limits of SQLite (32,766) and
// PostgreSQL (65,535).
const batchRows = 500

// valueRows returns "(?, ?), (?, ?), ..." for n rows of width values: the VALUES of a
// multi-row INSERT.
func valueRows(n, width int) string {
	row := "(" + placeholders(width) + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
}

// int64Args passes IDs as query arguments.
func int64Args(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// JobMove is one job of UpdateJobStates: the state and row version its caller read.
type JobMove struct {
	ID              string
	From            jobs.State
	ExpectedVersion int64
}
