package pgtest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// database is the database the server's tests use; the server's own "postgres" database
// stays empty.
const database = "bgtask"

// server is a throwaway Postgres server: a data directory initialized for the test binary
// and a postmaster started by pg_ctl, listening on 127.0.0.1 only. Everything it writes is
// under dir, which stop removes.
type server struct {
	bin  string // the directory of initdb and pg_ctl
	dir  string
	url  string
	user *osUser // who runs initdb and pg_ctl; nil: this process's user
}

// start initializes a data directory and starts a server on it. It returns an error
// matching errNoPostgres when the binaries are not installed.
func start() (*server, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	s := &server{bin: bin}
	// initdb refuses to run as root, and the server then needs its files to be another
	// user's: run both as the user the Postgres packages create.
	if os.Geteuid() == 0 {
		if s.user, err = lookupUser("postgres"); err != nil {
			return nil, fmt.Errorf("pgtest: running as root, Postgres must run as the user \"postgres\": %w", err)
		}
	}
	if s.dir, err = os.MkdirTemp("", "pgtest-"); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := s.setUp(); err != nil {
		return nil, errors.Join(err, os.RemoveAll(s.dir))
	}
	return s, nil
}

// setUp runs initdb and pg_ctl start in s.dir, and creates the test database.
func (s *server) setUp() error {
	if s.user != nil {
		if err := os.Chown(s.dir, s.user.uid, s.user.gid); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	// --no-sync and fsync=off: the data lives as long as the test binary, so durability
	// only costs time. C locale: the same sorting on every machine, and no locale to find.
	if err := s.run("initdb", "-D", s.data(), "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return err
	}
	// A free port can be taken between the check and the server's bind (another test
	// binary starting its own server): try again on another.
	var err error
	for range 3 {
		var port int
		if port, err = freePort(); err != nil {
			return err
		}
		if err = s.startOn(port); err == nil {
			return s.createDatabase(port)
		}
		if !strings.Contains(err.Error(), "could not bind") && !strings.Contains(err.Error(), "in use") {
			return err
		}
	}
	return err
}

// startOn starts the server on port with pg_ctl, which returns once it accepts
// connections. The server writes its log to a file rather than to pg_ctl's output: it
// outlives pg_ctl, and exec would wait for it to close that output.
func (s *server) startOn(port int) error {
	opts := fmt.Sprintf("-h 127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=300", port, s.dir)
	err := s.run("pg_ctl", "-D", s.data(), "-l", s.log(), "-w", "-t", "60", "-o", opts, "start")
	if err != nil {
		log, _ := os.ReadFile(s.log())
		return fmt.Errorf("%w\nserver log:\n%s", err, log)
	}
	s.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, database)
	return nil
}

// createDatabase creates the tests' database on the server listening on port.
func (s *server) createDatabase(port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port))
	if err != nil {
		return errors.Join(fmt.Errorf("pgtest: %w", err), s.stop())
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+database); err != nil {
		return errors.Join(fmt.Errorf("pgtest: %w", err), s.stop())
	}
	return nil
}

// stop stops the server at once (the data is thrown away, so there is nothing to flush)
// and removes its directory.
func (s *server) stop() error {
	err := s.run("pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop")
	return errors.Join(err, os.RemoveAll(s.dir))
}

func (s *server) data() string { return filepath.Join(s.dir, "data") }
func (s *server) log() string  { return filepath.Join(s.dir, "server.log") }

// run runs the program name of s.bin, as s.user, in s.dir: a directory the user can
// read, which the test's working directory may not be (initdb fails without one).
func (s *server) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	if s.user != nil {
		runAs(cmd, s.user)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgtest: %s %s: %w\n%s", name, strings.Join(args, " "), err, out.Bytes())
	}
	return nil
}

// libGlob matches the binary directories of the Debian and Ubuntu packages; the tests
// point it elsewhere to find none.
var libGlob = "/usr/lib/postgresql/*/bin"

// findBinaries returns the directory holding initdb and pg_ctl: the one on PATH, or the
// newest of the Debian and Ubuntu packages' /usr/lib/postgresql/VERSION/bin. Their
// binaries are not on PATH, only wrappers for clusters that those packages manage.
func findBinaries() (string, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("pg_ctl"); err == nil {
			return filepath.Dir(initdb), nil
		}
	}
	dirs, _ := filepath.Glob(libGlob)
	slices.SortFunc(dirs, func(a, b string) int { return cmp.Compare(version(b), version(a)) })
	for _, dir := range dirs {
		if executable(filepath.Join(dir, "initdb")) && executable(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	return "", errNoPostgres
}

// version returns the major version of a /usr/lib/postgresql/VERSION/bin directory.
func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

func executable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
