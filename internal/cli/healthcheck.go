package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/internal/termtext"
)

// healthcheckTimeout bounds one healthcheck request.
const healthcheckTimeout = 5 * time.Second

func (a *app) healthcheckCommand() *cobra.Command {
	var (
		ready bool
		addr  string
	)
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the gateway on this host answers /healthz (--ready: /readyz)",
		Long: `healthcheck asks the gateway's metrics server (PROMETHEUS_ADDRESS, or
--address) for /healthz, or /readyz with --ready, and exits 0 on 200, else
non-zero with the reason. It is for container healthchecks, in images
without curl or wget.`,
		Example: `  PROMETHEUS_ADDRESS=:8080 spectacles healthcheck --ready`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr == "" {
				addr, _ = a.env("PROMETHEUS_ADDRESS")
			}
			if addr == "" {
				return usageErrorf("no address: set PROMETHEUS_ADDRESS or --address")
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return usageErrorf("address %s: %w", termtext.Quote(addr), err)
			}
			switch host {
			case "", "0.0.0.0":
				host = "127.0.0.1"
			case "::":
				host = "::1"
			}
			path := "/healthz"
			if ready {
				path = "/readyz"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), healthcheckTimeout)
			defer cancel()
			url := "http://" + net.JoinHostPort(host, port) + path
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			text := strings.TrimSpace(string(body))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %d %s", path, resp.StatusCode, text)
			}
			_, err = fmt.Fprintln(a.stdout, text)
			return err
		},
	}
	cmd.Flags().BoolVar(&ready, "ready", false, "ask /readyz: broker reachable and every shard ready")
	cmd.Flags().StringVar(&addr, "address", "", "host:port of the metrics server (default PROMETHEUS_ADDRESS)")
	return cmd
}
