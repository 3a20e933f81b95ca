package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is everything that differs between SQLite and PostgreSQL. Queries are written
// once, with `?` placeholders and the syntax both accept (ON CONFLICT, RETURNING, partial
// indexes); the differences left are placeholders, how times travel, row locking and how a
// constraint violation is reported.
type dialect struct {
	name      string // "sqlite" or "postgres", as in Config.Driver
	dollar    bool   // placeholders are $1, $2, ... instead of ?
	forUpdate string // row-lock suffix for SELECT; SQLite has one writer and no row locks
}

var (
	sqliteDialect = &dialect{name: DriverSQLite}
	pgDialect     = &dialect{name: DriverPostgres, dollar: true, forUpdate: " FOR UPDATE"}
)

// sqliteTimeLayout is fixed-width so that string order is time order in SQLite.
const sqliteTimeLayout = "2006-01-02T15:04:05.000000Z"

// rebind turns `?` placeholders into `$n` for PostgreSQL. Queries in this package never
// contain a literal question mark inside a string, but quoted text is skipped anyway. It is
// a single pass over a short string, cheap next to the round trip; no cache, as filtered
// lists make many distinct queries.
func (d *dialect) rebind(query string) string {
	if !d.dollar {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n, quoted := 0, false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			quoted = !quoted
			b.WriteByte(c)
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ts is how a time is passed to the database: UTC, microsecond precision (what both back
// ends keep), and NULL for the zero time.
func (d *dialect) ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	t = normTime(t)
	if d.dollar {
		return t
	}
	return t.Format(sqliteTimeLayout)
}

// normTime is the form every time takes in the store.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// now is the current time as the store keeps it.
func now() time.Time { return normTime(time.Now()) }

// orNow returns t in store form, or the current time when t is zero.
func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return now()
	}
	return normTime(t)
}

// classify maps a driver error to one of the package's sentinel errors, or nil when the
// error is not one the callers can act on.
func (d *dialect) classify(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return ErrConflict
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY, sqlite3.SQLITE_CONSTRAINT_CHECK,
			sqlite3.SQLITE_CONSTRAINT_NOTNULL, sqlite3.SQLITE_CONSTRAINT_TRIGGER,
			sqlite3.SQLITE_CONSTRAINT:
			return ErrInvalid
		}
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return ErrConflict
		case pe.Code == "40001" || pe.Code == "40P01": // serialization_failure, deadlock_detected
			return ErrAborted
		case strings.HasPrefix(pe.Code, "23"): // other integrity constraint violations
			return ErrInvalid
		case strings.HasPrefix(pe.Code, "22"): // data exceptions: bad encoding, NUL byte, range
			return ErrInvalid
		}
	}
	return nil
}

// wrap names the operation and attaches the sentinel error that applies.
func (d *dialect) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrAborted) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	if s := d.classify(err); s != nil {
		return fmt.Errorf("store: %s: %w: %w", op, s, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// dbtx is what both *sql.DB and *sql.Tx offer.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// q runs the package's queries on a connection pool or inside a transaction. Every read and
// write method is written once, here, for both back ends.
type q struct {
	db dbtx
	d  *dialect
	// stmts, on SQLite, prepares each query once (see stmtCache): the pool's own cache,
	// or the writer's when tx is set.
	stmts *stmtCache
	tx    *sql.Tx // the transaction db is; nil on a pool
}

// stmt is query's prepared statement, bound to the transaction when there is one; nil
// when it runs unprepared.
func (x *q) stmt(ctx context.Context, query string) *sql.Stmt {
	switch {
	case x.stmts == nil:
		return nil
	case x.tx == nil:
		return x.stmts.prepare(ctx, query)
	}
	st := x.stmts.get(query)
	if st == nil {
		x.stmts.want(query)
		return nil
	}
	return x.tx.StmtContext(ctx, st)
}

func (x *q) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query = x.d.rebind(query)
	if st := x.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return x.db.ExecContext(ctx, query, args...)
}

func (x *q) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query = x.d.rebind(query)
	if st := x.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return x.db.QueryContext(ctx, query, args...)
}

func (x *q) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	query = x.d.rebind(query)
	if st := x.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return x.db.QueryRowContext(ctx, query, args...)
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// timeCol scans a time column of either back end; NULL gives the zero time.
type timeCol struct{ t *time.Time }

func (c timeCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*c.t = time.Time{}
	case time.Time:
		*c.t = normTime(x)
	case string:
		return c.parse(x)
	case []byte:
		return c.parse(string(x))
	default:
		return fmt.Errorf("time column holds %T", v)
	}
	return nil
}

func (c timeCol) parse(s string) error {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("time column: %w", err)
	}
	*c.t = normTime(t)
	return nil
}

// strCol scans a nullable text column; NULL gives "".
type strCol struct{ s *string }

func (c strCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*c.s = ""
	case string:
		*c.s = x
	case []byte:
		*c.s = string(x)
	default:
		return fmt.Errorf("text column holds %T", v)
	}
	return nil
}

// bytesCol scans a nullable blob, bytea, text or JSON column into a fresh slice; NULL gives nil.
type bytesCol struct{ b *[]byte }

func (c bytesCol) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*c.b = nil
	case []byte:
		*c.b = append([]byte(nil), x...)
	case string:
		*c.b = []byte(x)
	default:
		return fmt.Errorf("bytes column holds %T", v)
	}
	return nil
}

// nullStr passes "" as NULL, for optional references.
func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullBytes passes an empty slice as NULL.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// placeholders returns "?, ?, ..." for n values.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// where collects optional filter conditions.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

// contains keeps rows where one of cols holds text, ignoring case (ASCII case on
// SQLite, whose LOWER folds nothing else); LIKE's wildcards in text match themselves.
func (w *where) contains(text string, cols ...string) {
	if text == "" {
		return
	}
	pat := "%" + likeEscaper.Replace(strings.ToLower(text)) + "%"
	conds := make([]string, len(cols))
	args := make([]any, len(cols))
	for i, c := range cols {
		conds[i] = "LOWER(" + c + ") LIKE ? ESCAPE '\\'"
		args[i] = pat
	}
	w.add("("+strings.Join(conds, " OR ")+")", args...)
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`)

func (w *where) in(col string, vals []string) {
	if len(vals) == 0 {
		return
	}
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	w.add(col+" IN ("+placeholders(len(vals))+")", args...)
}

// olderThan keeps, of a list ordered newest first (created_at DESC, id DESC), the rows
// after the one a cursor of encodeCursor(cursorTime(created), id) names; "" keeps all.
func (w *where) olderThan(d *dialect, cursor string) error {
	return w.afterCursor(d, cursor, "created_at", "id", false)
}

// afterCursor keeps, of a list ordered by (timeCol, idCol), ascending or descending, the
// rows after the one a cursor of encodeCursor(cursorTime(t), id) names; "" keeps all.
func (w *where) afterCursor(d *dialect, cursor, timeCol, idCol string, ascending bool) error {
	if cursor == "" {
		return nil
	}
	c, err := decodeCursor(cursor, 2)
	if err != nil {
		return err
	}
	t, err := parseCursorTime(c[0])
	if err != nil {
		return err
	}
	cmp := " < "
	if ascending {
		cmp = " > "
	}
	w.add("("+timeCol+cmp+"? OR ("+timeCol+" = ? AND "+idCol+cmp+"?))", d.ts(t), d.ts(t), c[1])
	return nil
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}
