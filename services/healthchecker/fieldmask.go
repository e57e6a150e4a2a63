package healthchecker

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// applyMask copies the fields named by paths from src into dst. A path may
// name a nested field ("http.url"); a whole message, list or map is replaced
// when its own name is given. Setting a member of a oneof clears the others.
func applyMask(dst, src protoreflect.Message, paths []string) error {
	for _, path := range paths {
		if err := applyPath(dst, src, strings.Split(path, "."), path); err != nil {
			return err
		}
	}
	return nil
}

func applyPath(dst, src protoreflect.Message, parts []string, full string) error {
	fd := dst.Descriptor().Fields().ByName(protoreflect.Name(parts[0]))
	if fd == nil {
		return fmt.Errorf("update_mask: %q: no field %q", full, parts[0])
	}
	if len(parts) == 1 {
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		} else {
			dst.Clear(fd)
		}
		return nil
	}
	if fd.Message() == nil || fd.IsList() || fd.IsMap() {
		return fmt.Errorf("update_mask: %q: %q has no sub-fields", full, parts[0])
	}
	if !src.Has(fd) {
		return applyPath(dst.Mutable(fd).Message(), dst.NewField(fd).Message(), parts[1:], full)
	}
	return applyPath(dst.Mutable(fd).Message(), src.Get(fd).Message(), parts[1:], full)
}
