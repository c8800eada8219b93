package cli

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// knownSettings are the environment variables the gateway command reads.
func knownSettings() map[string]bool {
	known := map[string]bool{}
	for _, s := range settings() {
		known[s.env] = true
	}
	for _, s := range gatewaySettings() {
		known[s.env] = true
	}
	return known
}

// defaultDrain is GATEWAY_DRAIN_TIMEOUT's default.
func defaultDrain(t *testing.T) time.Duration {
	for _, s := range gatewaySettings() {
		if s.env == "GATEWAY_DRAIN_TIMEOUT" {
			d, err := time.ParseDuration(s.def)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatal("no GATEWAY_DRAIN_TIMEOUT setting")
	return 0
}

// interpolation is compose's ${VAR}, ${VAR:-default} and ${VAR:?error}.
var interpolation = regexp.MustCompile(`\$\{([A-Z_]+)(?::?([-?])([^}]*))?\}`)

// resolve expands compose variables: their default, or "x" for a
// required one (the token).
func resolve(v string) string {
	return interpolation.ReplaceAllStringFunc(v, func(m string) string {
		p := interpolation.FindStringSubmatch(m)
		if p[2] == "-" {
			return p[3]
		}
		return "x"
	})
}

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       map[string]string `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		StopGracePeriod string `yaml:"stop_grace_period"`
		DependsOn       map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
}

// TestComposeFile checks deploy/compose.yaml as `docker compose config`
// cannot here: the services and images, that every variable the gateway
// gets is one it reads and that their values load, the healthcheck, the
// ports and the stop grace period.
func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(moduleRoot, "deploy/compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	images := map[string]string{"redis": "redis:", "rabbitmq": "rabbitmq:3-management", "gateway": "spectacles"}
	for name, prefix := range images {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		if !strings.HasPrefix(s.Image, prefix) {
			t.Errorf("service %s image %q, want %s...", name, s.Image, prefix)
		}
	}
	if len(c.Services) != len(images) {
		t.Errorf("services %v", slices.Sorted(func(yield func(string) bool) {
			for k := range c.Services {
				if !yield(k) {
					return
				}
			}
		}))
	}
	gw := c.Services["gateway"]
	if gw.Build["context"] != ".." {
		t.Errorf("gateway build context %q, want the repository (..)", gw.Build["context"])
	}
	if !slices.Equal(gw.Command, []string{"gateway"}) {
		t.Errorf("gateway command %v", gw.Command)
	}
	known := knownSettings()
	env := map[string]string{}
	for k, v := range gw.Environment {
		if !known[k] {
			t.Errorf("the gateway service sets %s, which the gateway does not read", k)
		}
		env[k] = resolve(v)
	}
	for _, k := range []string{"DISCORD_TOKEN", "DISCORD_EVENTS", "DISCORD_SHARD_COUNT", "REDIS_URL", "BROKER_TYPE", "AMQP_URL", "PROMETHEUS_ADDRESS", "SHARD_STORE_TYPE"} {
		if _, ok := env[k]; !ok {
			t.Errorf("the gateway service does not set %s", k)
		}
	}
	if !strings.HasPrefix(gw.Environment["DISCORD_TOKEN"], "${DISCORD_TOKEN:?") {
		t.Errorf("DISCORD_TOKEN must come from the environment (.env), required: %q", gw.Environment["DISCORD_TOKEN"])
	}
	// The values load as the gateway loads them, with either broker.
	for _, broker := range []string{env["BROKER_TYPE"], "amqp"} {
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		e["BROKER_TYPE"] = broker
		if _, err := loadConfig(mapLookup(e), changedNone); err != nil {
			t.Errorf("BROKER_TYPE=%s: %v", broker, err)
		}
		gc, err := loadGatewayConfig(mapLookup(e), changedNone)
		if err != nil {
			t.Errorf("gateway settings: %v", err)
		}
		if gc.StoreType != "redis" {
			t.Errorf("shard store %q: sessions must survive a restart", gc.StoreType)
		}
	}
	// The healthcheck runs this binary's own healthcheck, at the path the
	// image installs it.
	hc := gw.Healthcheck.Test
	if len(hc) < 3 || hc[0] != "CMD" || hc[1] != dockerBinary(t) || hc[2] != "healthcheck" {
		t.Errorf("gateway healthcheck %v, want CMD %s healthcheck ...", hc, dockerBinary(t))
	} else if r := cli(t, append(hc[2:], "--help")...); r.code != 0 {
		t.Errorf("%v --help: %d %s", hc[2:], r.code, r.stderr)
	}
	port := env["PROMETHEUS_ADDRESS"][strings.LastIndex(env["PROMETHEUS_ADDRESS"], ":")+1:]
	if !slices.ContainsFunc(gw.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+port+":"+port) }) {
		t.Errorf("gateway ports %v do not publish the metrics port %s", gw.Ports, port)
	}
	drain, err := time.ParseDuration(env["GATEWAY_DRAIN_TIMEOUT"])
	if err != nil {
		drain = defaultDrain(t)
	}
	if grace, err := time.ParseDuration(gw.StopGracePeriod); err != nil || grace <= drain+6*time.Second {
		t.Errorf("stop_grace_period %q must exceed GATEWAY_DRAIN_TIMEOUT (%s) + 6 s", gw.StopGracePeriod, drain)
	}
	for _, dep := range []string{"redis", "rabbitmq"} {
		if gw.DependsOn[dep].Condition != "service_healthy" {
			t.Errorf("the gateway should wait for %s to be healthy", dep)
		}
	}
	if !strings.Contains(string(raw), "# proxy:") || !strings.Contains(string(raw), `command: ["proxy"]`) {
		t.Error("no commented placeholder for the REST proxy")
	}
}

func changedNone(string) (string, bool) { return "", false }

// dockerfile is the instructions of each stage of the Dockerfile.
func dockerfile(t *testing.T) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(moduleRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]string
	sc := bufio.NewScanner(f)
	line := ""
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		if cont, ok := strings.CutSuffix(l, `\`); ok {
			line += cont + " "
			continue
		}
		line += l
		if strings.HasPrefix(line, "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("instruction before FROM: %s", line)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], line)
		line = ""
	}
	return stages
}

// dockerBinary is where the image installs spectacles (its ENTRYPOINT).
func dockerBinary(t *testing.T) string {
	stages := dockerfile(t)
	for _, in := range stages[len(stages)-1] {
		if rest, ok := strings.CutPrefix(in, "ENTRYPOINT "); ok {
			var ep []string
			if err := yaml.Unmarshal([]byte(rest), &ep); err != nil || len(ep) == 0 {
				t.Fatalf("ENTRYPOINT %s: %v", rest, err)
			}
			return ep[0]
		}
	}
	t.Fatal("no ENTRYPOINT")
	return ""
}

// TestDockerfile: a static, trimmed build of this main package, copied
// into a distroless or scratch image that runs it as a non-root user,
// the gateway by default, with the metrics port exposed.
func TestDockerfile(t *testing.T) {
	stages := dockerfile(t)
	if len(stages) != 2 {
		t.Fatalf("%d stages, want build and final", len(stages))
	}
	build, final := stages[0], stages[1]
	if !strings.HasPrefix(build[0], "FROM golang:") || !strings.HasSuffix(build[0], " AS build") {
		t.Errorf("build stage %q", build[0])
	}
	var goBuild string
	for _, in := range build {
		if strings.Contains(in, "go build") {
			goBuild = in
		}
	}
	fields := strings.Fields(goBuild)
	out := ""
	for i, f := range fields {
		if f == "-o" && i+1 < len(fields) {
			out = fields[i+1]
		}
	}
	if !strings.HasPrefix(goBuild, "RUN CGO_ENABLED=0 go build ") || !slices.Contains(fields, "-trimpath") ||
		!slices.Contains(fields, "-ldflags='-s") || fields[len(fields)-1] != "." || out == "" {
		t.Errorf("build command %q: want RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o OUT .", goBuild)
	}
	// "." is this module's root, the spectacles command.
	if pkg, err := exec.Command("go", "list", "-f", "{{.Name}} {{.ImportPath}}", moduleRoot).Output(); err != nil || strings.TrimSpace(string(pkg)) != "main github.com/spectacles-go/spectacles" {
		t.Errorf("the build stage builds %q (%v), want the main package", pkg, err)
	}
	if !strings.HasPrefix(final[0], "FROM gcr.io/distroless/static") && final[0] != "FROM scratch" {
		t.Errorf("final stage %q, want distroless/static or scratch", final[0])
	}
	bin := dockerBinary(t)
	var user, cmd, expose, promEnv string
	copied := false
	for _, in := range final {
		switch k, v, _ := strings.Cut(in, " "); k {
		case "USER":
			user = v
		case "CMD":
			cmd = v
		case "EXPOSE":
			expose = v
		case "ENV":
			if p, ok := strings.CutPrefix(v, "PROMETHEUS_ADDRESS="); ok {
				promEnv = p
			}
		case "COPY":
			copied = copied || v == "--from=build "+out+" "+bin
		}
	}
	if !copied {
		t.Errorf("the final stage does not copy %s to the ENTRYPOINT %s", out, bin)
	}
	if name, _, _ := strings.Cut(user, ":"); name == "" || name == "root" || name == "0" {
		t.Errorf("USER %q: the image must run as a non-root user", user)
	}
	if cmd != `["gateway"]` {
		t.Errorf("CMD %s, want [\"gateway\"]", cmd)
	}
	if expose == "" || !strings.HasSuffix(promEnv, ":"+expose) {
		t.Errorf("EXPOSE %q and PROMETHEUS_ADDRESS %q disagree", expose, promEnv)
	}
}

// unitKeys reads a systemd unit's keys, by section.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	section := ""
	for l := range strings.SplitSeq(string(raw), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s: line %q", path, l)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

// TestSystemdUnit checks deploy/spectacles-gateway.service's keys and,
// where systemd-analyze exists, verifies it.
func TestSystemdUnit(t *testing.T) {
	path := filepath.Join(moduleRoot, "deploy/spectacles-gateway.service")
	k := unitKeys(t, path)
	want := map[string]string{
		"Service.ExecStart": "/usr/local/bin/spectacles gateway", "Service.EnvironmentFile": "/etc/spectacles/gateway.env",
		"Service.Restart": "on-failure", "Service.DynamicUser": "yes", "Service.NoNewPrivileges": "yes",
		"Service.ProtectSystem": "strict", "Service.ProtectHome": "yes", "Service.PrivateTmp": "yes",
		"Service.KillSignal": "SIGTERM", "Install.WantedBy": "multi-user.target",
	}
	for key, v := range want {
		if got := k[key]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", key, got, v)
		}
	}
	stop, err := time.ParseDuration(strings.Join(k["Service.TimeoutStopSec"], ""))
	if drain := defaultDrain(t); err != nil || stop <= drain+6*time.Second {
		t.Errorf("TimeoutStopSec %q must exceed GATEWAY_DRAIN_TIMEOUT (%s) + 6 s", k["Service.TimeoutStopSec"], drain)
	}
	// The example environment file sets only what the gateway reads.
	known := knownSettings()
	raw, err := os.ReadFile(filepath.Join(moduleRoot, "deploy/gateway.env.example"))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(raw), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if name, _, _ := strings.Cut(l, "="); !known[name] {
			t.Errorf("gateway.env.example sets %s, which the gateway does not read", name)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the unit's keys were checked, not verified by systemd")
		return
	}
	// verify needs ExecStart to exist: point it at a binary of this test.
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit, _ := os.ReadFile(path)
	dir := t.TempDir()
	tmp := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/spectacles", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", tmp).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
