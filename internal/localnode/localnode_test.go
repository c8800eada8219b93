package localnode

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// startEmbedded starts a real embedded server, counting the starts.
func startEmbedded(t *testing.T, starts *int, mu *sync.Mutex) func() (Server, error) {
	return func() (Server, error) {
		mu.Lock()
		*starts++
		mu.Unlock()
		// A slow start, as on a loaded machine: it widens the window
		// in which a second process could miss the first one's server.
		time.Sleep(50 * time.Millisecond)
		e, err := embedded.Start()
		if err != nil {
			return nil, err
		}
		return e, nil
	}
}

func closeNode(t *testing.T, n *Node) {
	t.Helper()
	if err := n.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestLocalNodeJoinStartsAdvertisesAndFinds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spectacles")
	if _, err := Join(t.Context(), dir, nil); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Join without a node = %v, want ErrNotRunning", err)
	}
	var mu sync.Mutex
	starts := 0
	owner, err := Join(t.Context(), dir, startEmbedded(t, &starts, &mu))
	if err != nil {
		t.Fatal(err)
	}
	if !owner.Owned || owner.PID != os.Getpid() || owner.Path != filepath.Join(dir, FileName) {
		t.Errorf("owner = %+v", owner)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v, %v; want 0700", fi.Mode(), err)
	}
	fi, err = os.Stat(owner.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	var ad Advert
	b, _ := os.ReadFile(owner.Path)
	if err := json.Unmarshal(b, &ad); err != nil || ad.Addr != owner.Addr || ad.PID != os.Getpid() || ad.Started.IsZero() {
		t.Errorf("file = %s (%v)", b, err)
	}

	found, err := Join(t.Context(), dir, startEmbedded(t, &starts, &mu))
	if err != nil {
		t.Fatal(err)
	}
	if found.Owned || found.Addr != owner.Addr || found.URL() != "redis://"+owner.Addr {
		t.Errorf("found = %+v, owner = %+v", found, owner)
	}
	closeNode(t, found) // a node found is not stopped by its user
	if err := ping(t.Context(), owner.Addr); err != nil {
		t.Errorf("the server stopped when a user closed it: %v", err)
	}
	if starts != 1 {
		t.Errorf("%d starts, want 1", starts)
	}

	closeNode(t, owner)
	if _, err := os.Stat(owner.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the advertisement is left after its owner closed: %v", err)
	}
	if err := ping(t.Context(), owner.Addr); err == nil {
		t.Error("the owner's server still answers after Close")
	}
	if _, err := Join(t.Context(), dir, nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Join after the owner closed = %v, want ErrNotRunning", err)
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestLocalNodeStaleAdvertisementIsReplaced(t *testing.T) {
	live, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	cases := map[string]string{
		"dead pid, live server":  `{"addr":"` + live.Addr() + `","pid":` + strconv.Itoa(deadPID(t)) + `,"started":"2026-01-01T00:00:00Z"}`,
		"live pid, closed port":  `{"addr":"` + closedAddr(t) + `","pid":` + strconv.Itoa(os.Getpid()) + `,"started":"2026-01-01T00:00:00Z"}`,
		"not JSON":               `{"addr":`,
		"not a loopback address": `{"addr":"192.0.2.1:6379","pid":` + strconv.Itoa(os.Getpid()) + `,"started":"2026-01-01T00:00:00Z"}`,
		"no pid":                 `{"addr":"` + live.Addr() + `","started":"2026-01-01T00:00:00Z"}`,
		"empty":                  ``,
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Join(t.Context(), dir, nil); !errors.Is(err, ErrNotRunning) {
				t.Fatalf("Join with a stale file = %v, want ErrNotRunning", err)
			}
			var mu sync.Mutex
			starts := 0
			n, err := Join(t.Context(), dir, startEmbedded(t, &starts, &mu))
			if err != nil {
				t.Fatal(err)
			}
			defer closeNode(t, n)
			if !n.Owned || starts != 1 || n.Addr == live.Addr() {
				t.Errorf("node = %+v after %d starts, want a new one", n, starts)
			}
			ad, err := readAdvert(path)
			if err != nil || ad.Addr != n.Addr || ad.PID != os.Getpid() {
				t.Errorf("the stale file was not replaced: %+v, %v", ad, err)
			}
		})
	}
}

func TestLocalNodeRaceEndsOnOneServer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	var mu sync.Mutex
	starts := 0
	const n = 8
	nodes := make([]*Node, n)
	errs := make([]error, n)
	var ready, wg sync.WaitGroup
	ready.Add(n)
	gate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			ready.Done()
			<-gate
			nodes[i], errs[i] = Join(context.Background(), dir, startEmbedded(t, &starts, &mu))
		})
	}
	ready.Wait()
	close(gate)
	wg.Wait()
	owners := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Join %d: %v", i, errs[i])
		}
		if nodes[i].Addr != nodes[0].Addr {
			t.Errorf("node %d is at %s, node 0 at %s", i, nodes[i].Addr, nodes[0].Addr)
		}
		if nodes[i].Owned {
			owners++
		}
	}
	if owners != 1 || starts != 1 {
		t.Errorf("%d owners and %d starts, want 1 and 1", owners, starts)
	}
	for _, nd := range nodes {
		closeNode(t, nd)
	}
}

func TestLocalNodeCloseLeavesAnotherOwnersFile(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	starts := 0
	n, err := Join(t.Context(), dir, startEmbedded(t, &starts, &mu))
	if err != nil {
		t.Fatal(err)
	}
	other := Advert{Addr: n.Addr, PID: os.Getpid(), Started: n.Started.Add(time.Second)}
	if err := writeAdvert(dir, n.Path, other); err != nil {
		t.Fatal(err)
	}
	closeNode(t, n)
	ad, err := readAdvert(n.Path)
	if err != nil || !ad.Started.Equal(other.Started) {
		t.Errorf("Close removed or changed another owner's file: %+v, %v", ad, err)
	}
}

func TestLocalNodeDirIsMadePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Join(t.Context(), dir, nil); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Join = %v", err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mode = %v, %v; want 0700", fi.Mode(), err)
	}
}

func TestLocalNodeDir(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	uid := strconv.Itoa(os.Getuid())
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"XDG_RUNTIME_DIR": "/run/user/7", "TMPDIR": "/t"}, "/run/user/7/spectacles"},
		{map[string]string{"XDG_RUNTIME_DIR": "relative", "TMPDIR": "/t"}, "/t/spectacles-" + uid},
		{map[string]string{"TMPDIR": "/t"}, "/t/spectacles-" + uid},
		{map[string]string{}, filepath.Join(os.TempDir(), "spectacles-"+uid)},
	} {
		if got := Dir(env(c.env)); got != c.want {
			t.Errorf("Dir(%v) = %q, want %q", c.env, got, c.want)
		}
	}
}
