package compose

import "errors"

var (
	// ErrInvalid marks a compose file that cannot be read or that yields an
	// application the deployer cannot accept (a bad name, a missing value).
	ErrInvalid = errors.New("invalid compose file")
	// ErrUnsupported marks a well-formed compose file that uses a key the
	// deployer does not support. The error text names the key path, e.g.
	// "services.web.build".
	ErrUnsupported = errors.New("not supported")
)
