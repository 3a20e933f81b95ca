package ctl

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// agentColumns are the columns of an agents file, the fields of an enrolment.
var agentColumns = []string{"id", "hostname", "broker_user"}

// agentLine is one agent of an agents file and the line it is on.
type agentLine struct {
	line int
	in   client.AgentEnrolment
}

// readAgentsFile reads a CSV agents file (agent add --from): a header naming the columns,
// then one agent a line. Errors name the file, the line and the column.
func readAgentsFile(name string, r io.Reader) ([]agentLine, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s is empty; it needs a header line naming the columns %s", name, strings.Join(agentColumns, ", "))
	}
	if err != nil {
		return nil, csvError(name, err)
	}
	line, _ := cr.FieldPos(0)
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))) // a spreadsheet's byte-order mark
		switch {
		case !slices.Contains(agentColumns, h):
			return nil, fmt.Errorf("%s: line %d, column %d: unknown column %q; the columns are %s", name, line, i+1, h, strings.Join(agentColumns, ", "))
		case col[h] > 0:
			return nil, fmt.Errorf("%s: line %d, column %d: column %q named twice", name, line, i+1, h)
		}
		col[h] = i + 1
	}
	for _, must := range []string{"id", "hostname"} {
		if col[must] == 0 {
			return nil, fmt.Errorf("%s: line %d: no %s column; the header names the columns, for example: %s", name, line, must, strings.Join(agentColumns, ","))
		}
	}
	field := func(rec []string, name string) string {
		if i := col[name]; i > 0 {
			return strings.TrimSpace(rec[i-1])
		}
		return ""
	}
	var out []agentLine
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(name, err)
		}
		line, _ := cr.FieldPos(0)
		a := agentLine{line: line, in: client.AgentEnrolment{ID: field(rec, "id"), Hostname: field(rec, "hostname"), BrokerUser: field(rec, "broker_user")}}
		for _, c := range []string{"id", "hostname"} {
			if field(rec, c) == "" {
				return nil, fmt.Errorf("%s: line %d, column %d (%s): empty; every agent needs an id and a hostname", name, line, col[c], c)
			}
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds a header but no agents", name)
	}
	return out, nil
}

// csvError names the line and column of a CSV syntax error.
func csvError(name string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: line %d, column %d: %w", name, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("reading %s: %w", name, err)
}

// enrolFromFile enrols the agents of a CSV file, client.MaxAgentBatch to a request.
func (e *env) enrolFromFile(cmd *cobra.Command, c *client.Client, path string, asJSON bool) error {
	name, r := path, e.stdin
	if path == "-" {
		name = "standard input"
	} else {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	lines, err := readAgentsFile(name, r)
	if err != nil {
		return err
	}
	enrolled := make([]client.Agent, 0, len(lines))
	for start := 0; start < len(lines); start += client.MaxAgentBatch {
		batch := lines[start:min(start+client.MaxAgentBatch, len(lines))]
		in := make([]client.AgentEnrolment, len(batch))
		for i, l := range batch {
			in[i] = l.in
		}
		as, err := c.EnrolAgents(cmd.Context(), in)
		if err != nil {
			return e.batchRefused(name, batch, len(enrolled), err)
		}
		enrolled = append(enrolled, as...)
	}
	if asJSON {
		return printJSON(e.stdout, enrolled)
	}
	_, err = fmt.Fprintf(e.stdout, "%d agents enrolled from %s\n", len(enrolled), name)
	return err
}

// batchRefused prints each refused line of a batch and says what was enrolled before it.
func (e *env) batchRefused(name string, batch []agentLine, before int, err error) error {
	first, last := batch[0].line, batch[len(batch)-1].line
	var ae *client.Error
	if !errors.As(err, &ae) || len(ae.Entries) == 0 {
		if before == 0 {
			return err
		}
		return fmt.Errorf("%w; the %d agents before line %d are enrolled, those from line %d on are not", err, before, first, first)
	}
	for _, x := range ae.Entries {
		line := "?"
		if x.Index >= 0 && x.Index < len(batch) {
			line = fmt.Sprint(batch[x.Index].line)
		}
		fmt.Fprintf(e.stderr, "%s: line %s (%s): %s: %s\n", name, line, clean(x.ID), clean(x.Field), clean(oneLine(x.Message)))
	}
	msg := fmt.Sprintf("%s: %d of the %d agents of lines %d to %d refused (listed above), so none of them was enrolled",
		name, len(ae.Entries), len(batch), first, last)
	if before > 0 {
		msg += fmt.Sprintf("; the %d agents before line %d are enrolled: fix the lines above and go on from line %d", before, first, first)
	} else {
		msg += "; nothing was enrolled"
	}
	return errors.New(msg)
}
