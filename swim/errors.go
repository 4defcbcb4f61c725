package swim

import "errors"

// Sentinel errors. Errors returned by this package wrap them with context;
// callers test with errors.Is.
var (
	// ErrInvalidConfig is wrapped by Config.Validate (and so by New) with
	// the name of the bad field.
	ErrInvalidConfig = errors.New("invalid swim config")

	// ErrInvalidMeta is wrapped by Meta.Validate and by DecodeMeta with the
	// name of the bad field. A peer whose metadata fails to decode is not
	// admitted as a member.
	ErrInvalidMeta = errors.New("invalid member metadata")

	// ErrInvalidKey is wrapped by ParseKey and Config.Validate for a gossip
	// key that is not base64 or not 16, 24 or 32 bytes long.
	ErrInvalidKey = errors.New("invalid gossip key")

	// ErrShutdown is returned by Join and Leave after Shutdown.
	ErrShutdown = errors.New("swim: member is shut down")

	// ErrUnsupportedMemberlist is returned by New when the memberlist
	// module's node table does not have the layout this package reads
	// suspicions from (see the package documentation). It means the
	// dependency was upgraded without updating this package.
	ErrUnsupportedMemberlist = errors.New("swim: unsupported hashicorp/memberlist version")
)
