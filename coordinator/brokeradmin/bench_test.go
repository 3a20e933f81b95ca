package brokeradmin

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// BenchmarkPutAgents provisions 1,000 new agents per op on the real broker and reports
// agents/s; the users are deleted between ops, off the clock.
func BenchmarkPutAgents(b *testing.B) {
	const perOp = 1000
	br := testenv.NewBroker(b)
	ctx := testenv.Context(b)
	c := newClient(b, br.VHost)
	a := admin(b)
	var took time.Duration
	for range b.N {
		b.StopTimer()
		us := make([]AgentUser, perOp)
		users := make([]string, perOp)
		for i := range us {
			id := testenv.UniqueUser("ws-")
			users[i], _ = protocol.AgentUser(id)
			us[i] = AgentUser{AgentID: id, Password: newPassword(b)}
		}
		deleteUsersAtEnd(b, users...) // should an op fail half-way
		b.StartTimer()
		start := time.Now()
		if err := c.PutAgents(ctx, us); err != nil {
			b.Fatal(err)
		}
		took += time.Since(start)
		b.StopTimer()
		if err := a.do(ctx, http.MethodPost, "/users/bulk-delete", map[string][]string{"users": users}, nil, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*perOp)/took.Seconds(), "agents/s")
}

// BenchmarkPutAgentConcurrent provisions 1,000 new agents per op by 16 callers of
// PutAgent at once, as the coordinator's enrolments do with 16 clients, and by 128, as
// during a large rollout; it reports agents/s. The users are deleted between ops, off
// the clock.
func BenchmarkPutAgentConcurrent(b *testing.B) {
	for _, callers := range []int{16, 128} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			const perOp = 1000
			br := testenv.NewBroker(b)
			ctx := testenv.Context(b)
			c := newClient(b, br.VHost)
			a := admin(b)
			var took time.Duration
			for range b.N {
				b.StopTimer()
				us := make([]AgentUser, perOp)
				users := make([]string, perOp)
				for i := range us {
					id := testenv.UniqueUser("ws-")
					users[i], _ = protocol.AgentUser(id)
					us[i] = AgentUser{AgentID: id, Password: newPassword(b)}
				}
				deleteUsersAtEnd(b, users...)
				work := make(chan AgentUser, perOp)
				for _, u := range us {
					work <- u
				}
				close(work)
				b.StartTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for range callers {
					wg.Go(func() {
						for u := range work {
							if err := c.PutAgent(ctx, u); err != nil {
								b.Error(err)
							}
						}
					})
				}
				wg.Wait()
				took += time.Since(start)
				b.StopTimer()
				if err := a.do(ctx, http.MethodPost, "/users/bulk-delete", map[string][]string{"users": users}, nil, nil); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*perOp)/took.Seconds(), "agents/s")
		})
	}
}
