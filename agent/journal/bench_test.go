package journal

import (
	"context"
	"fmt"
	"testing"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// BenchmarkJobLifecycle: one job through the journal as the executor and the sender take
// it, on disk with a sync per commit: the dispatch journalled, four steps each journalled
// with its progress message, the messages marked sent, the result journalled and marked
// sent. Seven commits a job; ns/op is a whole job.
func BenchmarkJobLifecycle(b *testing.B) {
	ctx := context.Background()
	f := newFixture(b)
	i := 0
	for b.Loop() {
		ref := protocol.JobRef{JobID: fmt.Sprintf("bench-%d", i), Attempt: 1}
		i++
		if _, err := f.j.RecordDispatch(ctx, dispatch(b, f, ref, "13572468")); err != nil {
			b.Fatal(err)
		}
		var ids []string
		for _, step := range []protocol.Step{protocol.StepTokenFound, protocol.StepTokenFound, protocol.StepTokenFound, protocol.StepTokenFound} {
			p, err := protocol.NewEnvelope(agentID, ref, protocol.Progress{Step: step})
			if err != nil {
				b.Fatal(err)
			}
			if err := f.j.Update(ctx, ref, Change{State: StateRunning, Step: string(step), StepStatus: StepDone,
				Outbox: []*protocol.Envelope{p}}); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, p.ID)
		}
		if err := f.j.MarkSent(ctx, ids...); err != nil {
			b.Fatal(err)
		}
		res, err := protocol.NewEnvelope(agentID, ref, protocol.Result{Outcome: protocol.OutcomeFailed,
			Error: protocol.NewError(protocol.CodeJobCancelled, "bench")})
		if err != nil {
			b.Fatal(err)
		}
		if err := f.j.Update(ctx, ref, Change{State: StateFailed, Result: res}); err != nil {
			b.Fatal(err)
		}
		if err := f.j.MarkSent(ctx, res.ID); err != nil {
			b.Fatal(err)
		}
	}
}
