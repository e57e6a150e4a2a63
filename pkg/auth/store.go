// Package auth is the suite's access control: API tokens with roles
// (viewer, operator, admin) kept hashed in a JetStream KV bucket, gRPC
// interceptors that authenticate every call and check its method's role,
// and an audit event for every call that changes state.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	"github.com/opsuite/opsuite/pkg/kvwatch"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Bucket is the KV bucket of tokens, keyed by token name.
const Bucket = "opsuite_access_tokens"

// SecretPrefix starts every generated secret, so scanners recognise a
// leaked one.
const SecretPrefix = "ops_"

// Sentinel errors.
var (
	ErrNotFound      = errors.New("token not found")
	ErrExists        = errors.New("token exists")
	ErrUnauthorized  = errors.New("unauthenticated")
	ErrInvalidSecret = errors.New("invalid secret")
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// record is what the bucket keeps per token: the token and the SHA-256 of
// its secret (secrets are 160 random bits, so a fast hash is enough).
type record struct {
	Token json.RawMessage `json:"token"`
	Hash  string          `json:"hash"`
}

// Principal is who makes a call.
type Principal struct {
	Name string
	Role Role
}

// Store keeps tokens in NATS and a copy in memory, indexed by secret hash,
// kept current by watching the bucket, so authenticating a call is a map
// lookup and a revocation reaches every process at once.
type Store struct {
	kv jetstream.KeyValue

	mu     sync.RWMutex
	byHash map[string]*gatewayv1.Token
	byName map[string]*gatewayv1.Token
}

// Open creates or opens the bucket and starts following it until ctx ends.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("auth: open bucket %s: %w", Bucket, err)
	}
	s := &Store{kv: kv, byHash: map[string]*gatewayv1.Token{}, byName: map[string]*gatewayv1.Token{}}
	type loaded struct {
		m   *kvwatch.Mirror
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		m, err := kvwatch.StartMirror(ctx, kv, s.apply, kvwatch.MirrorConfig{})
		done <- loaded{m, err}
	}()
	select {
	case l := <-done:
		if l.err != nil {
			return nil, fmt.Errorf("auth: %w", l.err)
		}
		go l.m.Run(ctx)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		return nil, errors.New("auth: token bucket did not load within 10s")
	}
	return s, nil
}

func (s *Store) apply(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byName[e.Key()]; old != nil {
		for h, t := range s.byHash {
			if t.GetName() == old.GetName() {
				delete(s.byHash, h)
			}
		}
		delete(s.byName, e.Key())
	}
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return
	}
	t := &gatewayv1.Token{}
	if err := protojson.Unmarshal(rec.Token, t); err != nil {
		return
	}
	s.byName[e.Key()] = t
	s.byHash[rec.Hash] = t
}

// Authenticate returns the principal of a secret: a known, unrevoked,
// unexpired token.
func (s *Store) Authenticate(secret string, now time.Time) (Principal, error) {
	h := hash(secret)
	s.mu.RLock()
	t := s.byHash[h]
	s.mu.RUnlock()
	switch {
	case t == nil:
		return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthorized)
	case t.GetRevoked():
		return Principal{}, fmt.Errorf("%w: token %s is revoked", ErrUnauthorized, t.GetName())
	case t.GetExpireTime() != nil && !now.Before(t.GetExpireTime().AsTime()):
		return Principal{}, fmt.Errorf("%w: token %s expired at %s", ErrUnauthorized, t.GetName(), t.GetExpireTime().AsTime().UTC().Format(time.RFC3339))
	}
	return Principal{Name: t.GetName(), Role: t.GetRole()}, nil
}

// Empty reports whether no token exists yet.
func (s *Store) Empty() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byName) == 0
}

// Create stores a new token with secret (generated when empty) and
// returns the secret.
func (s *Store) Create(ctx context.Context, t *gatewayv1.Token, secret string) (string, error) {
	if !nameRE.MatchString(t.GetName()) {
		return "", fmt.Errorf("%w: name %q is not a DNS-1123 label", ErrInvalidSecret, t.GetName())
	}
	if secret == "" {
		secret = NewSecret()
	} else if len(secret) < 16 {
		return "", fmt.Errorf("%w: a chosen secret needs at least 16 characters", ErrInvalidSecret)
	}
	data, err := encode(t, hash(secret))
	if err != nil {
		return "", err
	}
	if _, err := s.kv.Create(ctx, t.GetName(), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("%w: %s", ErrExists, t.GetName())
		}
		return "", fmt.Errorf("auth: create token %s: %w", t.GetName(), err)
	}
	s.wait(ctx, func() bool { s.mu.RLock(); defer s.mu.RUnlock(); return s.byName[t.GetName()] != nil })
	return secret, nil
}

// SetSecret replaces the secret of token name (the bootstrap admin token
// following $OPSUITE_ADMIN_TOKEN).
func (s *Store) SetSecret(ctx context.Context, t *gatewayv1.Token, secret string) error {
	data, err := encode(t, hash(secret))
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, t.GetName(), data); err != nil {
		return fmt.Errorf("auth: store token %s: %w", t.GetName(), err)
	}
	h := hash(secret)
	s.wait(ctx, func() bool { s.mu.RLock(); defer s.mu.RUnlock(); return s.byHash[h] != nil })
	return nil
}

// Revoke marks a token revoked; it stays listed.
func (s *Store) Revoke(ctx context.Context, name string) (*gatewayv1.Token, error) {
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: read token %s: %w", name, err)
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("auth: decode token %s: %w", name, err)
	}
	t := &gatewayv1.Token{}
	if err := protojson.Unmarshal(rec.Token, t); err != nil {
		return nil, fmt.Errorf("auth: decode token %s: %w", name, err)
	}
	t.Revoked = true
	data, err := encode(t, rec.Hash)
	if err != nil {
		return nil, err
	}
	if _, err := s.kv.Update(ctx, name, data, e.Revision()); err != nil {
		return nil, fmt.Errorf("auth: revoke token %s: %w", name, err)
	}
	s.wait(ctx, func() bool { s.mu.RLock(); defer s.mu.RUnlock(); return s.byName[name].GetRevoked() })
	return t, nil
}

// Get returns one token.
func (s *Store) Get(name string) (*gatewayv1.Token, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.byName[name]
	return t, ok
}

// List returns every token by name.
func (s *Store) List() []*gatewayv1.Token {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*gatewayv1.Token, 0, len(s.byName))
	for _, t := range s.byName {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *gatewayv1.Token) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// wait gives the watch a moment to bring a write back, so a token works
// as soon as Create returns.
func (s *Store) wait(ctx context.Context, done func() bool) {
	deadline := time.Now().Add(2 * time.Second)
	for !done() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

func encode(t *gatewayv1.Token, h string) ([]byte, error) {
	tj, err := protojson.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("auth: encode token: %w", err)
	}
	return json.Marshal(record{Token: tj, Hash: h})
}

func hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewSecret returns a new random secret.
func NewSecret() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return SecretPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// equal compares secrets in constant time.
func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Bootstrap makes sure an admin token exists: the secret $OPSUITE_ADMIN_TOKEN
// names (token "admin", created or set to it), or, on a first start without
// it, a generated one. It returns the secret when it generated one, to be
// shown once.
func (s *Store) Bootstrap(ctx context.Context, fromEnv string) (generated string, err error) {
	admin := &gatewayv1.Token{Name: "admin", Role: RoleAdmin, Description: "bootstrap admin token", Creator: "opsuite", CreateTime: timestamppb.Now()}
	if fromEnv != "" {
		if p, err := s.Authenticate(fromEnv, time.Now()); err == nil && p.Role == RoleAdmin {
			return "", nil
		}
		if len(fromEnv) < 16 {
			return "", fmt.Errorf("%w: OPSUITE_ADMIN_TOKEN needs at least 16 characters", ErrInvalidSecret)
		}
		if old, ok := s.Get("admin"); ok {
			admin.CreateTime = old.GetCreateTime()
		}
		return "", s.SetSecret(ctx, admin, fromEnv)
	}
	if !s.Empty() {
		return "", nil
	}
	secret, err := s.Create(ctx, admin, "")
	if errors.Is(err, ErrExists) {
		return "", nil // another process bootstrapped first
	}
	return secret, err
}
