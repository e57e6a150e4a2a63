package kubernetes

import "time"

// AskDiscoveryFor makes p look for HTTPRoutes in groupVersion instead of
// gateway.networking.k8s.io/v1, and forget what it discovered: a test
// points it at a group version the cluster does not serve to take the
// no-Gateway-API path through real discovery while the harness has the
// CRDs installed (they are cluster-wide).
func AskDiscoveryFor(p *Platform, groupVersion string) {
	p.disc.mu.Lock()
	defer p.disc.mu.Unlock()
	p.disc.groupVersion = groupVersion
	p.disc.at = time.Time{}
	p.disc.served = false
}
