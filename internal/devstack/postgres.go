package devstack

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// pgBinDirs are searched for initdb and postgres: /usr/local/bin first,
// then Debian's /usr/lib/postgresql/VERSION/bin, newest version first.
func pgBinDirs() []string {
	dirs := []string{"/usr/local/bin", "/usr/local/pgsql/bin"}
	debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(debian, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	return append(dirs, debian...)
}

// Databases the stack creates.
const (
	DBKeystone = "keystone"
	DBRegion   = "berth_region"
	DBImage    = "berth_image"
)

func pgBinary(name string) (string, error) {
	dirs := pgBinDirs()
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("postgres: %s not found in %v (make deps)", name, dirs)
}

// pgCredential is the user PostgreSQL runs as; initdb refuses root.
func pgCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("postgres: need a system user \"postgres\": %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Stack) pgDir() string     { return filepath.Join(s.cfg.RunDir, "pg") }
func (s *Stack) pgDataDir() string { return filepath.Join(s.pgDir(), "data") }
func (s *Stack) pgSockDir() string { return filepath.Join(s.pgDir(), "sock") }

// superuserDSN reaches the cluster as "postgres" over its unix socket
// (trust authentication; the socket directory is ours).
func (s *Stack) superuserDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable connect_timeout=5", s.pgSockDir(), s.cfg.PGPort, db)
}

// startPostgres creates the cluster on first use, starts it, and makes sure
// roles and databases exist. It reports whether the keystone database was
// created just now (so Keystone must be bootstrapped again).
func (s *Stack) startPostgres(ctx context.Context) (freshKeystoneDB bool, err error) {
	initdb, err := pgBinary("initdb")
	if err != nil {
		return false, err
	}
	postgres, err := pgBinary("postgres")
	if err != nil {
		return false, err
	}
	cred, err := pgCredential()
	if err != nil {
		return false, err
	}
	for _, d := range []string{s.pgDir(), s.pgSockDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return false, err
		}
		if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
			return false, err
		}
	}
	// Every directory above the cluster must be searchable by postgres.
	if _, err := runCmd(ctx, nil, cred, "test", "-w", s.pgDir()); err != nil {
		return false, fmt.Errorf("postgres: user postgres cannot reach %s; make its parent directories world-searchable (chmod o+x): %w", s.pgDir(), err)
	}

	if _, err := os.Stat(filepath.Join(s.pgDataDir(), "PG_VERSION")); err != nil {
		start := time.Now()
		if _, err := runCmd(ctx, nil, cred, initdb, "-D", s.pgDataDir(), "-U", "postgres",
			"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
			return false, err
		}
		s.log.Info("initdb done", "dir", s.pgDataDir(), "took", time.Since(start).Round(time.Millisecond))
	}
	// A postmaster from a run that was killed still holds the data dir.
	if pid, ok := readPidFile(filepath.Join(s.pgDataDir(), "postmaster.pid")); ok && alive(pid) && sameExecutable(pid, postgres) {
		s.log.Warn("stopping leftover postgres", "pid", pid)
		if err := killAndWait(pid, syscall.SIGINT); err != nil {
			return false, err
		}
	}

	p := s.addProcess(procSpec{
		name: "postgres",
		path: postgres,
		args: []string{"-D", s.pgDataDir(), "-p", strconv.Itoa(s.cfg.PGPort), "-k", s.pgSockDir(),
			"-c", "listen_addresses=127.0.0.1",
			"-c", "max_connections=300",
			// A dev stack trades the last commits of a crash for speed;
			// never corruption (fsync stays on).
			"-c", "synchronous_commit=off",
		},
		dir:        s.pgDir(),
		ports:      []int{s.cfg.PGPort},
		cred:       cred,
		stopSignal: syscall.SIGINT, // fast shutdown: do not wait for clients
		ready: func(ctx context.Context) error {
			db, err := sql.Open("postgres", s.superuserDSN("postgres"))
			if err != nil {
				return err
			}
			defer db.Close()
			return db.PingContext(ctx)
		},
	})
	if err := p.start(ctx); err != nil {
		return false, err
	}
	return s.provisionPostgres(ctx)
}

func (s *Stack) provisionPostgres(ctx context.Context) (freshKeystoneDB bool, err error) {
	db, err := sql.Open("postgres", s.superuserDSN("postgres"))
	if err != nil {
		return false, err
	}
	defer db.Close()
	roles := []struct {
		name    string
		options string
	}{
		{pgRoleBerth, "LOGIN CREATEDB"}, // CREATEDB: tests make a database each
		{pgRoleKeystone, "LOGIN"},
	}
	for _, r := range roles {
		pw := pq.QuoteLiteral(s.secrets.PGPasswords[r.name])
		var exists bool
		if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, r.name).Scan(&exists); err != nil {
			return false, fmt.Errorf("postgres: look up role %s: %w", r.name, err)
		}
		verb := "CREATE"
		if exists {
			verb = "ALTER"
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf("%s ROLE %s %s PASSWORD %s", verb, pq.QuoteIdentifier(r.name), r.options, pw)); err != nil {
			return false, fmt.Errorf("postgres: %s role %s: %w", verb, r.name, err)
		}
	}
	dbs := []struct{ name, owner string }{
		{DBKeystone, pgRoleKeystone},
		{DBRegion, pgRoleBerth},
		{DBImage, pgRoleBerth},
	}
	for _, d := range dbs {
		var exists bool
		if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, d.name).Scan(&exists); err != nil {
			return false, fmt.Errorf("postgres: look up database %s: %w", d.name, err)
		}
		if exists {
			continue
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s ENCODING 'UTF8'", pq.QuoteIdentifier(d.name), pq.QuoteIdentifier(d.owner))); err != nil {
			return false, fmt.Errorf("postgres: create database %s: %w", d.name, err)
		}
		s.log.Info("created database", "db", d.name)
		if d.name == DBKeystone {
			freshKeystoneDB = true
		}
	}
	return freshKeystoneDB, nil
}

// dsn is the URL form lib/pq and pgx understand, for role berth.
func (s *Stack) dsn(db string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", pgRoleBerth, s.secrets.PGPasswords[pgRoleBerth], s.cfg.PGPort, db)
}
