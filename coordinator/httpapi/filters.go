package httpapi

import "time"

// optBool reads an optional true or false; absent is nil (no filter).
func (q query) optBool(k string) (*bool, error) {
	if q.get(k) == "" {
		return nil, nil
	}
	b, err := q.boolean(k)
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// timeParam reads an optional RFC 3339 time; absent is the zero time.
func (q query) timeParam(k string) (time.Time, error) {
	s := q.get(k)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, bad(k, "%q: want an RFC 3339 time such as 2026-03-01T00:00:00Z", s)
	}
	return t, nil
}
