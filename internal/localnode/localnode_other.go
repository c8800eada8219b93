//go:build !unix

package localnode

import (
	"context"
	"errors"
	"fmt"
)

// errUnsupported: the local node needs flock and process checks.
var errUnsupported = fmt.Errorf("local node: not supported on this system (set REDIS_URL): %w", errors.ErrUnsupported)

func ensureDir(string) error { return errUnsupported }

func lock(context.Context, string) (func(), error) { return nil, errUnsupported }

func processAlive(int) bool { return false }
