package testenv

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
)

// RemoveBrokerUserAtEnd deletes a broker user when the test ends, for users a component
// under test made (a coordinator provisioning agents): broker users belong to the whole
// broker, and a run leaves none behind. A user already gone is fine.
func RemoveBrokerUserAtEnd(t testing.TB, user string) {
	t.Helper()
	t.Cleanup(func() {
		err := mgmtDo("DELETE", "/users/"+url.PathEscape(user), nil, nil)
		var se *statusError
		if err != nil && (!errors.As(err, &se) || se.code != http.StatusNotFound) {
			t.Errorf("testenv: removing broker user %s: %v", user, err)
		}
	})
}

// BrokerUserExists says whether the broker has the user.
func BrokerUserExists(t testing.TB, user string) bool {
	t.Helper()
	err := mgmtDo("GET", "/users/"+url.PathEscape(user), nil, nil)
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		return false
	}
	if err != nil {
		t.Fatalf("testenv: broker user %s: %v; %s", user, err, managementHint)
	}
	return true
}

// UserConnections lists the open connections of a broker user (the per-user view, which
// sees a connection as soon as the broker registered it).
func UserConnections(t testing.TB, user string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	err := mgmtDo("GET", "/connections/username/"+url.PathEscape(user), nil, &rows)
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("testenv: connections of %s: %v; %s", user, err, managementHint)
	}
	return rows
}

// CloseUserConnections closes every connection of a broker user, as a network cut would.
func CloseUserConnections(t testing.TB, user, reason string) {
	t.Helper()
	err := mgmtDoReason("DELETE", "/connections/username/"+url.PathEscape(user), reason)
	var se *statusError
	if err != nil && (!errors.As(err, &se) || se.code != http.StatusNotFound) {
		t.Fatalf("testenv: closing the connections of %s: %v", user, err)
	}
}
