package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
)

// clientFlags are the connection flags every API command shares.
var clientFlags struct {
	addr, ca, cert, key string
	timeout             time.Duration
	output              string
}

// clientFlagNames are the flags read from the environment by API commands.
var clientFlagNames = []string{"addr", "ca", "cert", "key", "timeout", "output", "log-level", "log-format"}

func addClientFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&clientFlags.addr, "addr", "https://127.0.0.1:8443", "API address of a coordinatord node, or a comma-separated list of nodes tried in turn (env COORDINATORD_ADDR)")
	f.StringVar(&clientFlags.ca, "ca", "", "CA certificate that signed the node's certificate (env COORDINATORD_CA)")
	f.StringVar(&clientFlags.cert, "cert", "", "your client certificate; its claims are your identity (env COORDINATORD_CERT)")
	f.StringVar(&clientFlags.key, "key", "", "your private key (env COORDINATORD_KEY)")
	f.DurationVar(&clientFlags.timeout, "timeout", 10*time.Second, "time limit of each request (env COORDINATORD_TIMEOUT)")
	f.StringVarP(&clientFlags.output, "output", "o", "text", "output format: text or json (env COORDINATORD_OUTPUT)")
}

// newClient reads the connection flags (and their environment variables)
// and returns a client.
func newClient(cmd *cobra.Command) (*client.Client, error) {
	if err := applyEnvAndFile(cmd, clientFlagNames...); err != nil {
		return nil, err
	}
	if clientFlags.output != "text" && clientFlags.output != "json" {
		return nil, fmt.Errorf("--output %q: must be text or json", clientFlags.output)
	}
	return client.New(client.Config{
		Addr: clientFlags.addr, CAFile: clientFlags.ca, CertFile: clientFlags.cert, KeyFile: clientFlags.key,
		Timeout: clientFlags.timeout,
	})
}

// callAPI runs fn with a client and a request context made from the
// connection flags.
func callAPI(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	c, err := newClient(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := requestContext(cmd)
	defer cancel()
	return fn(ctx, c)
}

func requestContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, clientFlags.timeout+time.Second)
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// output prints v as JSON with -o json, or with text otherwise.
func output(cmd *cobra.Command, v any, text func(w io.Writer) error) error {
	if clientFlags.output == "json" {
		return printJSON(cmd.OutOrStdout(), v)
	}
	return text(cmd.OutOrStdout())
}

// formatError renders an API error with everything the server said.
func formatError(err error) string {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (HTTP %d, %s", ae.Message, ae.Status, ae.Code)
	if ae.Field != "" {
		fmt.Fprintf(&b, ", field %s", ae.Field)
	}
	b.WriteString(")")
	if ae.DecisionID != "" {
		fmt.Fprintf(&b, "\n  decision: %s", ae.DecisionID)
	}
	if details, ok := ae.Details.([]any); ok {
		for _, d := range details {
			if m, ok := d.(map[string]any); ok {
				fmt.Fprintf(&b, "\n  %v:%v:%v: %v", m["file"], m["row"], m["col"], m["message"])
			}
		}
	}
	return b.String()
}

func readFileArg(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}
