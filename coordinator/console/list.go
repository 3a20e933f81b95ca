package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// PageSize is how many rows a list page shows.
const PageSize = 50

// Query is a list page's filters and search, as its GET form sent them: the form works
// without JavaScript, and its URL can be bookmarked or shared.
type Query struct {
	url.Values
	path string
}

// queryOf reads the named filters of r's query string (trimmed), and the cursor.
func queryOf(r *http.Request, names ...string) Query {
	q := Query{Values: url.Values{}, path: r.URL.Path}
	in := r.URL.Query()
	for _, n := range append(names, "cursor") {
		if v := strings.TrimSpace(in.Get(n)); v != "" {
			q.Set(n, v)
		}
	}
	return q
}

// Page is the service page the query asks for.
func (q Query) Page() service.Page { return service.Page{Limit: PageSize, Cursor: q.Get("cursor")} }

// Filtered reports whether any filter (not the cursor) is set.
func (q Query) Filtered() bool {
	for k := range q.Values {
		if k != "cursor" {
			return true
		}
	}
	return false
}

// With is the query's URL with key set to value ("" removes it) and the cursor reset,
// for links that change one filter.
func (q Query) With(key, value string) string {
	v := cloneValues(q.Values)
	v.Del("cursor")
	if value == "" {
		v.Del(key)
	} else {
		v.Set(key, value)
	}
	return q.url(v)
}

func (q Query) url(v url.Values) string {
	if len(v) == 0 {
		return q.path
	}
	return q.path + "?" + v.Encode()
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// Pager is the navigation between a list's pages. The service's cursors only go
// forward: "first page" goes back to the start, and the browser's back button to the
// previous page.
type Pager struct {
	NextURL  string // "" on the last page
	FirstURL string // "" on the first page
	Count    int    // rows on this page
}

// pager builds the pager of a page of count rows whose next cursor is next.
func (q Query) pager(next string, count int) Pager {
	p := Pager{Count: count}
	if next != "" {
		v := cloneValues(q.Values)
		v.Set("cursor", next)
		p.NextURL = q.url(v)
	}
	if q.Get("cursor") != "" {
		v := cloneValues(q.Values)
		v.Del("cursor")
		p.FirstURL = q.url(v)
	}
	return p
}

// List is what a list page's template gets: its rows, filters and pager.
type List[T any] struct {
	Rows  []T
	Query Query
	Pager Pager
}

// listOf wraps rows the service returned for q, with next as its cursor.
func listOf[T any](q Query, rows []T, next string) List[T] {
	return List[T]{Rows: rows, Query: q, Pager: q.pager(next, len(rows))}
}
