// Package localnode finds, or starts and advertises, the one embedded
// broker server that the spectacles processes of one user on one machine
// share when no broker is configured: the local node.
//
// A process that starts the server advertises it in a runtime file,
// node.json in Dir (a directory of the user's, mode 0700; the file is mode
// 0600), holding the server's address, the process id and its start time.
// Other processes read it and check that the process lives and that the
// server answers PING; a file that fails either check is stale, ignored and
// replaced. A lock file (node.lock, taken with flock) serialises the check
// and the start, so that two processes starting at once end up on one
// server. When the owner exits it removes the advertisement, if the file is
// still its own.
package localnode

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// ErrNotRunning is returned by Join when no live local node is advertised
// and it was not asked to start one.
var ErrNotRunning = errors.New("no local node is running")

// FileName is the advertisement's name in the runtime directory.
const FileName = "node.json"

const (
	lockName    = "node.lock"
	maxFileSize = 4096             // an advertisement is far smaller
	pingTimeout = 2 * time.Second  // a live embedded server answers at once
	lockTimeout = 15 * time.Second // the holder only checks, or starts a server
)

// Advert is what a local node's runtime file holds.
type Advert struct {
	// Addr is the server's address, "127.0.0.1:PORT".
	Addr string `json:"addr"`
	// PID is the process that runs the server.
	PID int `json:"pid"`
	// Started is when that process started the server.
	Started time.Time `json:"started"`
}

// URL returns the server's Redis URL, "redis://127.0.0.1:PORT".
func (a Advert) URL() string { return "redis://" + a.Addr }

// Server is an embedded server a process runs for the local node.
type Server interface {
	// Addr returns the address it listens on, "127.0.0.1:PORT".
	Addr() string
	// Close stops it.
	Close()
}

// Node is the local node a process uses: one it found, or one it started
// (Owned).
type Node struct {
	Advert
	// Owned reports whether this process started the server and
	// advertises it.
	Owned bool
	// Path is the advertisement's file.
	Path string

	srv Server
	dir string
}

// Dir returns the runtime directory for env (a lookup such as
// os.LookupEnv): $XDG_RUNTIME_DIR/spectacles when XDG_RUNTIME_DIR is an
// absolute path, else spectacles-UID in $TMPDIR (or os.TempDir()).
func Dir(env func(string) (string, bool)) string {
	if d, ok := env("XDG_RUNTIME_DIR"); ok && filepath.IsAbs(d) {
		return filepath.Join(d, "spectacles")
	}
	tmp, ok := env("TMPDIR")
	if !ok || !filepath.IsAbs(tmp) {
		tmp = os.TempDir()
	}
	return filepath.Join(tmp, "spectacles-"+strconv.Itoa(os.Getuid()))
}

// Join returns the live local node advertised in dir. When there is none,
// it returns ErrNotRunning if start is nil; else it calls start and
// advertises the server it returns, which the returned Node then owns
// (Close stops it). Concurrent callers, in this process or others, are
// serialised by a lock, so that they all end up on one server.
func Join(ctx context.Context, dir string, start func() (Server, error)) (*Node, error) {
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	unlock, err := lock(ctx, filepath.Join(dir, lockName))
	if err != nil {
		return nil, err
	}
	defer unlock()
	path := filepath.Join(dir, FileName)
	if ad, err := readAdvert(path); err == nil && live(ctx, ad) {
		return &Node{Advert: ad, Path: path, dir: dir}, nil
	}
	if start == nil {
		return nil, ErrNotRunning
	}
	srv, err := start()
	if err != nil {
		return nil, err
	}
	ad := Advert{Addr: srv.Addr(), PID: os.Getpid(), Started: time.Now().UTC()}
	if err := writeAdvert(dir, path, ad); err != nil {
		srv.Close()
		return nil, err
	}
	return &Node{Advert: ad, Owned: true, Path: path, srv: srv, dir: dir}, nil
}

// Close ends this process's use of the node. An owner removes the
// advertisement, when the file still names its server, then stops the
// server; for a node found, it does nothing. It is not safe for
// concurrent use.
func (n *Node) Close() error {
	if !n.Owned || n.srv == nil {
		return nil
	}
	defer func() { n.srv.Close(); n.srv = nil }()
	ctx, cancel := context.WithTimeout(context.Background(), lockTimeout)
	defer cancel()
	unlock, err := lock(ctx, filepath.Join(n.dir, lockName))
	if err != nil {
		return err
	}
	defer unlock()
	ad, err := readAdvert(n.Path)
	if err != nil || !ad.Started.Equal(n.Started) || ad.PID != n.PID || ad.Addr != n.Addr {
		return nil // replaced by another process: not ours to remove
	}
	if err := os.Remove(n.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local node: remove %s: %w", n.Path, err)
	}
	return nil
}

// readAdvert reads and checks the advertisement at path.
func readAdvert(path string) (Advert, error) {
	f, err := os.Open(path)
	if err != nil {
		return Advert{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return Advert{}, err
	}
	if len(b) > maxFileSize {
		return Advert{}, fmt.Errorf("local node: %s is larger than %d bytes", path, maxFileSize)
	}
	var ad Advert
	if err := json.Unmarshal(b, &ad); err != nil {
		return Advert{}, fmt.Errorf("local node: %s: %w", path, err)
	}
	// Only a loopback address: the file names a server of this machine.
	host, _, err := net.SplitHostPort(ad.Addr)
	if err != nil {
		return Advert{}, fmt.Errorf("local node: %s: address %q: %w", path, ad.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return Advert{}, fmt.Errorf("local node: %s: address %q is not a loopback address", path, ad.Addr)
	}
	if ad.PID <= 0 {
		return Advert{}, fmt.Errorf("local node: %s: bad pid %d", path, ad.PID)
	}
	return ad, nil
}

// writeAdvert replaces the advertisement at path with ad, atomically: a
// reader sees the old file or the new one, never a part.
func writeAdvert(dir, path string, ad Advert) error {
	b, err := json.Marshal(ad)
	if err != nil {
		return fmt.Errorf("local node: %w", err)
	}
	f, err := os.CreateTemp(dir, FileName+".*") // mode 0600
	if err != nil {
		return fmt.Errorf("local node: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("local node: advertise in %s: %w", path, err)
	}
	return nil
}

// live reports whether the advertised process runs and its server
// answers PING.
func live(ctx context.Context, ad Advert) bool {
	return processAlive(ad.PID) && ping(ctx, ad.Addr) == nil
}

// ping sends PING to the Redis server at addr and expects +PONG.
func ping(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReaderSize(io.LimitReader(conn, 64), 64).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("local node: %s answered PING with %q", addr, line)
	}
	return nil
}
