package tests

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeCommands returns the indented commands of the README's first lines.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan() && i < 6; i++ {
		line := sc.Text()
		if strings.HasPrefix(line, "    ") {
			cmd := strings.TrimSpace(line)
			if j := strings.Index(cmd, "#"); j > 0 {
				cmd = strings.TrimSpace(cmd[:j])
			}
			cmds = append(cmds, cmd)
		}
	}
	return cmds
}

func TestTheREADMEStartsWithTheRunAndTestCommandsAndCIRunsTheTestCommand(t *testing.T) {
	cmds := readmeCommands(t)
	if len(cmds) != 2 || cmds[0] != "go run ./cmd/coordinatord dev" {
		t.Fatalf("README's first commands are %q, want the dev command then the test command", cmds)
	}
	ci, err := os.ReadFile(filepath.Join(repoRoot, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "\n"+cmds[1]+"\n") {
		t.Fatalf(".ci/run does not run the README's test command %q:\n%s", cmds[1], ci)
	}
}

// printed is one command line the dev node told the user to run.
type printed struct {
	line, comment string
}

// devInstructions splits dev's output into its export lines and commands.
func devInstructions(out string) (exports []string, cmds []printed) {
	comment := ""
	for _, line := range strings.Split(out, "\n") {
		s := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(s, "export "):
			exports = append(exports, s)
		case strings.HasPrefix(s, "# "):
			comment = s
		case strings.HasPrefix(s, "go run ./cmd/coordinatord "):
			c := printed{line: s, comment: comment}
			if i := strings.Index(s, "  #"); i > 0 {
				c.line, c.comment = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i:])
			}
			cmds = append(cmds, c)
			comment = ""
		}
	}
	return exports, cmds
}

// TestTheDevNodeAndTheCommandsItPrintsWork runs the README's first command
// as written, then every command it prints, as written, in a second shell.
func TestTheDevNodeAndTheCommandsItPrintsWork(t *testing.T) {
	if testing.Short() {
		t.Skip("builds with go run; skipped in -short")
	}
	args := strings.Fields(readmeCommands(t)[0])
	// The README's command listens on the default port; if something else
	// holds it on this machine, the same command on a free port shows the
	// same thing.
	if ln, err := net.Listen("tcp", "127.0.0.1:8443"); err != nil {
		t.Logf("127.0.0.1:8443 is taken (%v); adding --http-addr", err)
		args = append(args, "--http-addr", freeAddr(t))
	} else if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	dev := startProc(t, repoRoot, nil, args[0], args[1:]...)
	out := dev.waitOutput("Press Ctrl-C", 3*time.Minute)
	dataDir := regexp.MustCompile(`data and certificates in (\S+) \(removed on exit\)`).FindStringSubmatch(out)
	if dataDir == nil {
		t.Fatalf("dev did not say where its data is:\n%s", out)
	}
	exports, cmds := devInstructions(out)
	if len(exports) == 0 || len(cmds) < 7 {
		t.Fatalf("dev printed %d exports and %d commands:\n%s", len(exports), len(cmds), out)
	}

	checked := 0
	for _, c := range cmds {
		t.Run(c.line[len("go run ./cmd/coordinatord "):], func(t *testing.T) {
			sh := exec.Command("bash", "-c", strings.Join(exports, "\n")+"\n"+c.line)
			sh.Dir = repoRoot
			stdout, err := sh.Output()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			stderr := ""
			if exit != nil {
				stderr = string(exit.Stderr)
			}
			want := expectation(c)
			if want.code == exitDenied {
				// go run reports its child's status 3 as "exit status 3" and
				// exits 1 itself.
				want.code = 1
				if !strings.Contains(stderr, "exit status 3") {
					t.Fatalf("%s: the command did not exit with status 3 (denied): %s", c.line, stderr)
				}
			}
			if code != want.code || !strings.Contains(string(stdout)+stderr, want.mention) {
				t.Fatalf("%s\nexit %d (want %d), output lacks %q?\nstdout:\n%s\nstderr:\n%s", c.line, code, want.code, want.mention, stdout, stderr)
			}
			checked++
		})
	}
	if checked != len(cmds) {
		t.Fatalf("%d of %d printed commands behaved as described", checked, len(cmds))
	}

	// go run exits 1 when it is interrupted, whatever its child did, so
	// a clean stop is judged by the node's own last words.
	err := dev.stop(30 * time.Second)
	stderr := dev.stderr.String()
	var exit *exec.ExitError
	if (err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1)) || strings.Contains(stderr, "\nerror: ") ||
		strings.Contains(stderr, `"level":"ERROR"`) || !strings.Contains(stderr, "raft store closed") {
		t.Fatalf("dev did not stop cleanly on Ctrl-C: %v\n%s", err, tail(stderr, 3000))
	}
	if _, err := os.Stat(dataDir[1]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dev's temporary data dir %s is still there after exit (%v)", dataDir[1], err)
	}
}

// exitDenied is admission check's status for a denial.
const exitDenied = 3

type expect struct {
	code    int
	mention string
}

// expectation is what each printed command must do, judged by what the
// printout says about it.
func expectation(c printed) expect {
	switch {
	case strings.Contains(c.comment, "ALLOWED"):
		return expect{0, "ALLOWED"}
	case strings.Contains(c.comment, "DENIED"):
		return expect{exitDenied, "role pair worker->gate is not allowed"}
	case strings.Contains(c.line, "policy push") && strings.Contains(c.line, "worker"):
		return expect{1, `"policy.write" is not allowed for role "worker"`}
	case strings.Contains(c.line, "module list"):
		return expect{0, "two-dc-hold"}
	case strings.Contains(c.line, "job report "):
		return expect{0, "accepted"}
	case strings.Contains(c.line, "job reporters"):
		return expect{0, "results"}
	case strings.Contains(c.line, "module invoke"):
		return expect{0, `"hold":true`}
	case strings.Contains(c.line, "lease acquire"):
		return expect{0, "token 1"}
	case strings.Contains(c.line, "lease list"):
		return expect{0, "job-1"}
	case strings.Contains(c.line, "policy list"):
		return expect{0, "default"}
	case strings.Contains(c.line, "policy get"):
		return expect{0, "package coordinatord.admission"}
	case strings.Contains(c.line, "decisions"):
		return expect{0, "decisions shown"}
	case strings.Contains(c.line, "policy test"):
		return expect{0, "PASS"}
	}
	return expect{0, ""}
}
