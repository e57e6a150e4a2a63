package compose

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The compose keys the deployer maps, or may ignore without changing what
// runs. Every other key is rejected, so a key added to the compose
// specification later is refused rather than silently dropped.
var (
	topLevelKeys = set("services", "volumes", "networks",
		// Ignored: the project name is chosen by the caller, version is obsolete.
		"name", "version")
	serviceKeys = set("image", "ports", "environment", "volumes", "command",
		"entrypoint", "working_dir", "deploy", "healthcheck", "restart",
		"stop_grace_period",
		// Only the default network; checked in checkNetworks.
		"networks",
		// Ignored: replicas of different applications start independently and
		// reach each other through the router, so start order is not needed.
		"depends_on")
	deployKeys       = set("replicas", "resources", "mode")
	resourcesKeys    = set("limits")
	limitsKeys       = set("cpus", "memory")
	healthCheckKeys  = set("test", "interval", "timeout", "start_period", "retries", "disable")
	topVolumeKeys    = set("name", "external")
	unsupportedHints = map[string]string{
		"build":          "the deployer runs existing images; build them first",
		"env_file":       "files are not read on import; list the variables under environment",
		"extends":        "files are not read on import; write the service out in full",
		"include":        "files are not read on import; merge the files first",
		"label_file":     "files are not read on import",
		"profiles":       "every service is imported; remove the profiles",
		"container_name": "replica containers are named by the deployer",
		"labels":         "container labels are not carried over",
		"scale":          "use deploy.replicas",
	}
)

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func unsupported(path, hint string) error {
	if hint == "" {
		hint = "the deployer has no equivalent"
	}
	return fmt.Errorf("%s: %w: %s", path, ErrUnsupported, hint)
}

// checkKeys reports every key of m outside allowed as unsupported, in key
// order. Extension keys (x-...) are ignored, as the specification says.
func checkKeys(path string, m map[string]any, allowed map[string]bool) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if allowed[k] || strings.HasPrefix(k, "x-") {
			continue
		}
		errs = append(errs, unsupported(join(path, k), unsupportedHints[k]))
	}
	return errs
}

// checkModel walks the raw (interpolated, validated, not normalised) model
// for keys the deployer does not support.
func checkModel(model map[string]any) []error {
	errs := checkKeys("", model, topLevelKeys)
	if vols, ok := model["volumes"].(map[string]any); ok {
		for _, name := range slices.Sorted(maps.Keys(vols)) {
			if v, ok := vols[name].(map[string]any); ok {
				errs = append(errs, checkKeys("volumes."+name, v, topVolumeKeys)...)
			}
		}
	}
	errs = append(errs, checkNetworks("networks", model["networks"])...)
	services, _ := model["services"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(services)) {
		svc, ok := services[name].(map[string]any)
		if !ok {
			continue
		}
		p := "services." + name
		errs = append(errs, checkKeys(p, svc, serviceKeys)...)
		errs = append(errs, checkNetworks(p+".networks", svc["networks"])...)
		if d, ok := svc["deploy"].(map[string]any); ok {
			errs = append(errs, checkKeys(p+".deploy", d, deployKeys)...)
			if r, ok := d["resources"].(map[string]any); ok {
				errs = append(errs, checkKeys(p+".deploy.resources", r, resourcesKeys)...)
				if l, ok := r["limits"].(map[string]any); ok {
					errs = append(errs, checkKeys(p+".deploy.resources.limits", l, limitsKeys)...)
				}
			}
		}
		if h, ok := svc["healthcheck"].(map[string]any); ok {
			errs = append(errs, checkKeys(p+".healthcheck", h, healthCheckKeys)...)
		}
	}
	return errs
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// checkNetworks accepts only the default network, without configuration:
// every application is reachable through the deployer's router instead.
func checkNetworks(path string, v any) []error {
	var names []string
	switch n := v.(type) {
	case []any:
		for _, e := range n {
			s, _ := e.(string)
			if s != "default" {
				names = append(names, fmt.Sprint(e))
			}
		}
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(n)) {
			cfg, _ := n[k].(map[string]any)
			if k != "default" || len(cfg) > 0 {
				names = append(names, k)
			}
		}
	}
	errs := make([]error, 0, len(names))
	for _, name := range names {
		errs = append(errs, unsupported(path+"."+name, "only the default network is supported"))
	}
	return errs
}
