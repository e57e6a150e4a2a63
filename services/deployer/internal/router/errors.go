package router

import "errors"

// Sentinel errors of the router; callers test them with errors.Is.
var (
	// ErrInvalidConfig: New was given a configuration it cannot use.
	ErrInvalidConfig = errors.New("invalid router config")
	// ErrInvalidAddress: a backend address is not host:port.
	ErrInvalidAddress = errors.New("invalid backend address")
	// ErrInvalidWeights: weights are negative or do not sum to 100.
	ErrInvalidWeights = errors.New("invalid weights")
	// ErrNoReadyBackend: a revision given traffic has no ready backend.
	ErrNoReadyBackend = errors.New("no ready backend")
	// ErrUnknownBackend: no backend with that address is routed or draining.
	ErrUnknownBackend = errors.New("unknown backend")
	// ErrRevisionInUse: the revision still has backends or a weight.
	ErrRevisionInUse = errors.New("revision in use")
	// ErrClosed: the router was closed.
	ErrClosed = errors.New("router closed")
)

// Causes the router cancels a proxied request with; they decide the status
// the client gets.
var (
	errDrainDeadline = errors.New("backend drain deadline passed")
	errRouterClosed  = errors.New("router closed")
)
