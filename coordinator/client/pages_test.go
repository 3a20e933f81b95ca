package client_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// pagedJobs serves n jobs, pageSize per page, with cursors "c<offset>".
func pagedJobs(t *testing.T, n int, requests *int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		*requests++
		limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
		if err != nil {
			t.Errorf("limit %q", r.URL.Query().Get("limit"))
			return
		}
		off := 0
		if c := r.URL.Query().Get("cursor"); c != "" {
			off, _ = strconv.Atoi(strings.TrimPrefix(c, "c"))
		}
		if r.URL.Query().Get("state") != "approved" {
			t.Errorf("the filter was not sent on every page: %q", r.URL.RawQuery)
		}
		var l client.JobList
		for i := off; i < n && i < off+limit; i++ {
			l.Items = append(l.Items, client.Job{ID: "j" + strconv.Itoa(i)})
		}
		if off+limit < n {
			l.NextCursor = "c" + strconv.Itoa(off+limit)
		}
		writeJSON(w, 200, l)
	}
}

func TestAllJobsWalksCursors(t *testing.T) {
	tests := []struct {
		n, pageSize, wantRequests int
	}{
		{0, 10, 1},
		{7, 10, 1},
		{10, 10, 1},
		{25, 10, 3},
		{25, 1, 25},
	}
	for _, tt := range tests {
		var requests int
		c := serve(t, pagedJobs(t, tt.n, &requests))
		got, err := client.Collect(c.AllJobs(context.Background(), client.JobFilter{State: "approved"}, tt.pageSize))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tt.n {
			t.Errorf("n=%d page=%d: got %d jobs", tt.n, tt.pageSize, len(got))
		}
		for i, j := range got {
			if j.ID != "j"+strconv.Itoa(i) {
				t.Errorf("job %d is %s", i, j.ID)
				break
			}
		}
		if requests != tt.wantRequests {
			t.Errorf("n=%d page=%d: %d requests, want %d", tt.n, tt.pageSize, requests, tt.wantRequests)
		}
	}
}

func TestWalkStopsEarly(t *testing.T) {
	var requests int
	c := serve(t, pagedJobs(t, 100, &requests))
	n := 0
	for _, err := range c.AllJobs(context.Background(), client.JobFilter{State: "approved"}, 10) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 15 {
			break
		}
	}
	if requests != 2 {
		t.Errorf("%d requests for 15 jobs of pages of 10", requests)
	}
}

func TestWalkRefusesARepeatedCursor(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, client.OrgList{Items: []client.Org{{Name: "acme"}}, NextCursor: "same"})
	})
	got, err := client.Collect(c.AllOrgs(context.Background(), 0))
	if err == nil || !strings.Contains(err.Error(), `cursor "same" twice`) {
		t.Fatalf("err = %v", err)
	}
	if len(got) != 2 {
		t.Errorf("got %d orgs before the loop was noticed, want 2", len(got))
	}
}

func TestWalkStopsAtAnError(t *testing.T) {
	calls := 0
	c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		calls++
		if calls == 2 {
			writeJSON(w, 403, map[string]any{"error": map[string]string{"code": "forbidden", "message": "no"}})
			return
		}
		writeJSON(w, 200, client.AgentList{Items: []client.Agent{{ID: "ws-01"}}, NextCursor: "next"})
	})
	got, err := client.Collect(c.AllAgents(context.Background(), 0))
	if client.ErrorCode(err) != "forbidden" || len(got) != 1 {
		t.Errorf("got %d agents, err %v", len(got), err)
	}
}
