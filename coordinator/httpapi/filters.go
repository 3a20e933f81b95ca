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
func (q query) timeParam(k string) (time.Time, error) { return parseTime(k, q.get(k)) }
