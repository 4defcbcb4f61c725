package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// envPrefix is the prefix of environment variables that set flags.
const envPrefix = "COORDINATORD_"

// envName is the environment variable for a flag: --data-dir reads
// COORDINATORD_DATA_DIR.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnvAndFile fills every flag the command line left unset, first from
// the environment, then from the YAML config file named by --config (if the
// command has that flag). Each error names the variable or key and file.
// With names given, only those flags are read from the environment.
func applyEnvAndFile(cmd *cobra.Command, names ...string) error {
	var fileValues map[string]string
	if cf := cmd.Flags().Lookup("config"); cf != nil {
		path := cf.Value.String()
		if !cf.Changed {
			path = os.Getenv(envName("config"))
		}
		if path != "" {
			v, err := readConfigFile(path, cmd.Flags())
			if err != nil {
				return err
			}
			fileValues = v
		}
	}
	var errs []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		if len(names) > 0 && !slices.Contains(names, f.Name) {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := cmd.Flags().Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", envName(f.Name), v, err))
			}
			return
		}
		if v, ok := fileValues[f.Name]; ok {
			if err := cmd.Flags().Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("config key %q: %q: %v", f.Name, v, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("configuration: %s", strings.Join(errs, "; "))
	}
	return nil
}

// readConfigFile reads a flat YAML map whose keys are flag names. Unknown
// keys are errors, so a typo never silently leaves a default in place.
func readConfigFile(path string, flags *pflag.FlagSet) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var doc map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := make(map[string]string, len(doc))
	var unknown []string
	for k, v := range doc {
		if flags.Lookup(k) == nil || k == "config" {
			unknown = append(unknown, k)
			continue
		}
		switch v := v.(type) {
		case map[string]any, []any:
			return nil, fmt.Errorf("config file %s: key %q: must be a single value", path, k)
		case nil:
			return nil, fmt.Errorf("config file %s: key %q has no value", path, k)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("config file %s: unknown keys %s (keys are the server's flag names, e.g. data-dir)", path, strings.Join(unknown, ", "))
	}
	return out, nil
}
