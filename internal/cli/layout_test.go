package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyMainImportsTheCommandLayer: the module root holds main.go only,
// and no package but that main package imports this one (imports point
// downward: the command layer uses the library, never the other way).
func TestOnlyMainImportsTheCommandLayer(t *testing.T) {
	const module = "github.com/spectacles-go/spectacles"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{.Name}}|{{join .GoFiles \",\"}}|{{join .Imports \",\"}}|{{join .TestImports \",\"}}|{{join .XTestImports \",\"}}", moduleRoot+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	for line := range strings.SplitSeq(strings.TrimRight(string(out), "\n"), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 6 {
			t.Fatalf("go list line %q", line)
		}
		path, name, files := f[0], f[1], f[2]
		seen++
		if path == module {
			if name != "main" || files != "main.go" {
				t.Errorf("the module root holds package %s with %s, want package main with main.go only", name, files)
			}
			continue
		}
		for _, imports := range f[3:] {
			for imp := range strings.SplitSeq(imports, ",") {
				if imp == module+"/internal/cli" && path != module+"/internal/cli" {
					t.Errorf("%s imports %s: only the main package may", path, imp)
				}
			}
		}
	}
	if seen < 2 {
		t.Fatalf("go list listed %d packages:\n%s", seen, out)
	}
}
