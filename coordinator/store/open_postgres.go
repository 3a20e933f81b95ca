package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/rs/zerolog"
)

// PostgreSQL goes through pgx's database/sql adapter rather than pgxpool: the same query
// code, transactions and scanning then serve both back ends, and the cost (an interface
// conversion per value) is nothing next to a network round trip.

const (
	pgDefaultMaxConns = 10
	// pgConnectTimeout bounds the first connection when the caller's context has no
	// deadline, so an unreachable server fails Open instead of hanging it.
	pgConnectTimeout = 10 * time.Second
)

func openPostgres(ctx context.Context, cfg Config, log zerolog.Logger) (*sqlStore, error) {
	if cfg.DSN == "" {
		return nil, fmt.Errorf("store: postgres: empty DSN; give a URL such as postgres://user:password@host:5432/db: %w", ErrInvalid)
	}
	// pgx redacts the password in its parse errors.
	pcfg, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: bad DSN: %w: %w", ErrInvalid, err)
	}
	where := fmt.Sprintf("%s@%s:%d/%s", pcfg.User, pcfg.Host, pcfg.Port, pcfg.Database)
	db := stdlib.OpenDB(*pcfg)
	n := cfg.MaxConns
	if n <= 0 {
		n = pgDefaultMaxConns
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxIdleTime(5 * time.Minute)

	pingCtx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		pingCtx, cancel = context.WithTimeout(ctx, pgConnectTimeout)
		defer cancel()
	}
	if err := db.PingContext(pingCtx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: postgres: cannot connect to %s: %w", where, err)
	}
	log.Debug().Str("server", where).Msg("postgres store open")
	return newSQLStore(pgDialect, db, db, log), nil
}
