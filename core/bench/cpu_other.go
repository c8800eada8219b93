//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package bench

import "time"

// processCPU reports nothing where getrusage is not available.
func processCPU() time.Duration { return 0 }
