package kubernetes

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// FieldManagerRestart owns nothing but the restart annotation of the pod
// template. The deployer's own applies never set it, so they leave it in
// place (as `kubectl rollout restart` keeps its annotation under a manager
// of its own) and a later scale does not restart the pods again.
const FieldManagerRestart = "opsuite-deployer-restart"

// AnnotationRestart on the pod template names the restart that last
// replaced the pods; a new value makes the Deployment roll every pod.
const AnnotationRestart = "opsuite.restart"

// Restart replaces every pod of the serving Deployment, keeping its
// revision: the pod template's restart annotation is set to token, which
// the Deployment rolls out with its maxSurge/maxUnavailable, and Restart
// waits for that rollout. Calling it again with the same token only waits.
func (p *Platform) Restart(ctx context.Context, t Target, token string, o Options) error {
	slot, err := p.servingSlot(ctx, t, "restart", &o)
	if err != nil {
		return err
	}
	d, err := p.getDeployment(ctx, t, slot)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("kubernetes: restart %s/%s: deployment gone: %w", t.App, t.Environment, driver.ErrNotFound)
	}
	name := t.deploymentName(slot)
	since := time.Now()
	if d.Spec.Template.Annotations[AnnotationRestart] != token {
		cfg := appsv1ac.Deployment(name, t.namespace()).
			WithSpec(appsv1ac.DeploymentSpec().
				WithTemplate(corev1ac.PodTemplateSpec().WithAnnotations(map[string]string{AnnotationRestart: token})))
		opts := metav1.ApplyOptions{FieldManager: FieldManagerRestart, Force: true}
		if _, err := p.cs.AppsV1().Deployments(t.namespace()).Apply(ctx, cfg, opts); err != nil {
			return apiErr("restart deployment "+name, err)
		}
		p.log.Info("deployment restarted", "namespace", t.namespace(), "deployment", name, "restart", token)
	}
	return p.waitRollout(ctx, t.namespace(), name, since)
}
