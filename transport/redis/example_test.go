package redis_test

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log"
	"os"
	"strings"
	"testing"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/transport/redis"
)

// run is the README's "Using the library" code, exactly: keep the two
// identical (TestReadmeLibrarySnippet checks it).
func run(ctx context.Context) error {
	b, err := redis.Open(ctx, redis.Config{URL: "127.0.0.1:6379", Options: core.Options{
		Identity: core.Identity{Group: "audit", Client: core.DefaultClient()},
	}})
	if err != nil {
		return err
	}
	defer b.Close() // drains running handlers

	// Consume returns once the group exists; handlers run in the background.
	err = b.Consume(ctx, []string{"MESSAGE_CREATE"}, func(ctx context.Context, m *core.Message) {
		var msg struct {
			Content string `json:"content"`
		}
		if err := m.Decode(&msg); err != nil {
			_ = m.Reject(ctx, err.Error()) // to MESSAGE_CREATE:dlq, with the reason
			return
		}
		_ = m.Reply(ctx, map[string]any{"seen": true}) // for a caller waiting in Call
		_ = m.Ack(ctx)                                 // returns once Redis confirmed
	})
	if err != nil {
		return err
	}

	id, err := b.Publish(ctx, "MESSAGE_CREATE", map[string]any{"content": "hi"})
	if err != nil {
		return err
	}
	fmt.Println("published", id)

	reply, err := b.Call(ctx, "REQUEST", map[string]any{"path": "/gateway/bot"}) // ErrTimeout after 5 s
	if err != nil {
		return err
	}
	var answer map[string]any
	return reply.Decode(&answer)
}

// Example consumes, publishes and calls with the Redis driver, as the
// README shows (compiled, not run: it needs a Redis and a REQUEST responder).
func Example() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// TestReadmeLibrarySnippet: the README's "Using the library" block is the
// source of run above, so that the README's code compiles as written.
func TestReadmeLibrarySnippet(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## Using the library")
	if !ok {
		t.Fatal("README has no \"Using the library\" section")
	}
	_, block, ok := strings.Cut(section, "```go\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("the section has no go code block")
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_test.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var fn string
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "run" {
			fn = string(src[fset.Position(fd.Pos()).Offset:fset.Position(fd.End()).Offset])
		}
	}
	if fn == "" {
		t.Fatal("no func run")
	}
	if got, want := strings.TrimSpace(block), strings.TrimSpace(fn); got != want {
		t.Errorf("README's library code differs from func run in example_test.go (which compiles); README should read:\n```go\n%s\n```\nline by line: %s", want, firstDiff(got, want))
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if !bytes.Equal([]byte(al[i]), []byte(bl[i])) {
			return fmt.Sprintf("line %d: README %q, example %q", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("README has %d lines, example %d", len(al), len(bl))
}
