package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/swim"
)

func newKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new gossip encryption key",
		Long: `Print a new random 32-byte key (AES-256, from the operating system's secure
random source), base64-encoded, for encrypting the gossip between servers and
agents. Every member of a pool needs the same key: give it to servers and
agents with --gossip-key-file. A member without it cannot join.`,
		Example: `  coordinatord keygen > gossip.key && chmod 600 gossip.key`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := swim.GenerateKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), swim.EncodeKey(k))
			return err
		},
	}
}
