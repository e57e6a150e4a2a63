package gateway

import (
	"bytes"
	"errors"
	"io"
	"reflect"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/opsuite/opsuite/pkg/protojsonerr"
	"google.golang.org/protobuf/proto"
)

// namingMarshaler is the JSON marshaler of the gateway. Its decoder turns
// protojson errors, which give only a line and column, into errors that
// name the field at fault.
type namingMarshaler struct {
	*runtime.JSONPb
}

func (m *namingMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		data, err := io.ReadAll(r)
		if err != nil {
			return err // the error handler maps a too-large body to 413
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return nil
		}
		msg, ok := protoTarget(v)
		if !ok {
			if err := m.JSONPb.Unmarshal(data, v); err != nil {
				return errors.New(protojsonerr.Describe(data, err))
			}
			return nil
		}
		if err := m.UnmarshalOptions.Unmarshal(data, msg); err != nil {
			// grpc-gateway reports decode errors as InvalidArgument.
			return errors.New(protojsonerr.Describe(data, err))
		}
		return nil
	})
}

// protoTarget finds the message to decode into: v itself, or the message a
// pointer-to-pointer (how generated code passes a body field) points to,
// allocated when nil.
func protoTarget(v any) (proto.Message, bool) {
	if m, ok := v.(proto.Message); ok {
		return m, true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Pointer {
		return nil, false
	}
	if _, ok := reflect.Zero(rv.Elem().Type()).Interface().(proto.Message); !ok {
		return nil, false
	}
	if rv.Elem().IsNil() {
		rv.Elem().Set(reflect.New(rv.Elem().Type().Elem()))
	}
	m, ok := rv.Elem().Interface().(proto.Message)
	return m, ok
}

// StreamContentType names the content type of server-streamed responses.
func (m *namingMarshaler) StreamContentType(any) string { return ndjson }
