package deployer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/util/intstr"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
)

// kubeExecutor carries out an environment's rollout steps on a Kubernetes
// cluster. Kubernetes owns the replicas (a Deployment's ReplicaSets start
// and stop pods), so a step becomes a strategy-level operation of the
// platform rather than replica starts and stops:
//
//   - rolling and recreate: the new revision applied to the serving
//     Deployment, which rolls it with maxSurge/maxUnavailable (one step);
//   - blue-green: Preview on the idle Deployment, Switch of the Service
//     selector, Retire of the old Deployment;
//   - canary: the replicas split between the two Deployments by weight,
//     the Service selecting both;
//   - rollback: Abort (all traffic to the stable Deployment at once) for
//     blue-green and canary, the Deployment's kept ReplicaSet for rolling.
//
// Readiness is the pods' readiness probe (the health check's HTTP or TCP
// probe) as the Deployment's availability reports it; the monitor's alerts
// and analysis gate the rollout through the runner as on every driver.
type kubeExecutor struct {
	p   *kubernetes.Platform
	t   kubernetes.Target
	log *slog.Logger
}

func (s *Service) kubeExecutor(app, env string, spec *deployerv1.ApplicationSpec) *kubeExecutor {
	return &kubeExecutor{p: s.kube, t: kubernetes.TargetFor(app, env, spec.GetDriver().GetKubernetes()), log: s.log}
}

// checkKube checks, before anything is stored or started, that spec can
// run as app/env on the cluster: names, image, ports and options valid,
// and no object the deployer does not own in the way.
func (s *Service) checkKube(ctx context.Context, app, env string, rev int64, spec *deployerv1.ApplicationSpec) error {
	if driverKindOf(spec) != kubernetes.Name || s.kube == nil {
		return nil
	}
	if c := spec.GetDriver().GetKubernetes().GetContext(); c != "" && c != s.cfg.KubeContext {
		return &fieldError{"spec.driver.kubernetes.context", fmt.Sprintf("context %q is not the deployer's: it runs against %s (--kube-context); leave it empty or name that one", c, kubeContextName(s.cfg.KubeContext))}
	}
	k := s.kubeExecutor(app, env, spec)
	return k.p.Check(ctx, k.t, kubernetes.WorkloadFor(rev, spec), kubeOptions(spec, max(spec.GetReplicas(), 1)))
}

func kubeContextName(c string) string {
	if c == "" {
		return "its kubeconfig's current context"
	}
	return fmt.Sprintf("context %q", c)
}

// options are a step's Deployment options; without a rolling strategy a
// Deployment rolls as the deployer does elsewhere: one extra pod at a time,
// none taken away before its replacement is ready.
func kubeOptions(spec *deployerv1.ApplicationSpec, replicas int32) kubernetes.Options {
	o := kubernetes.OptionsFor(spec, replicas)
	switch {
	case spec.GetStrategy().GetRecreate() != nil:
		zero, all := intstr.FromInt32(0), intstr.FromString("100%")
		o.MaxSurge, o.MaxUnavailable = &zero, &all
	case o.MaxSurge == nil && o.MaxUnavailable == nil:
		one, zero := intstr.FromInt32(1), intstr.FromInt32(0)
		o.MaxSurge, o.MaxUnavailable = &one, &zero
	}
	return o
}

// Converge reaches st. Every operation of the platform is idempotent and
// reads what runs before it changes anything, so a restarted deployer
// calling it again for the step it was in finishes that step.
func (k *kubeExecutor) Converge(ctx context.Context, st rollout.State) error {
	if st.NewReplicas == 0 && st.OldReplicas == 0 {
		return k.wrap(ctx, k.p.Delete(ctx, k.t))
	}
	spec := st.New.Spec
	w := kubernetes.WorkloadFor(st.New.Number, spec)
	total := max(spec.GetReplicas(), st.NewReplicas)
	if st.Restart != "" && st.Old.Number == st.New.Number {
		// Every strategy restarts alike: the Deployment replaces its pods.
		return k.wrap(ctx, k.p.Restart(ctx, k.t, st.Restart, kubeOptions(spec, total)))
	}
	if st.Old.Number == 0 || st.Old.Number == st.New.Number {
		// A first deploy, a scale or a restore: the serving Deployment.
		return k.wrap(ctx, k.p.Rolling(ctx, k.t, w, kubeOptions(spec, st.NewReplicas)))
	}
	serving, canary, err := k.p.Serving(ctx, k.t)
	if err != nil {
		return k.wrap(ctx, err)
	}
	switch {
	case spec.GetStrategy().GetBlueGreen() != nil:
		if serving == st.New.Number {
			// Switched already (a restart after the switch).
			if st.OldReplicas == 0 {
				return k.wrap(ctx, k.p.Retire(ctx, k.t))
			}
			return nil
		}
		if err := k.p.Preview(ctx, k.t, w, kubeOptions(spec, total)); err != nil {
			return k.wrap(ctx, err)
		}
		if st.Weight < 100 {
			return nil
		}
		if err := k.p.Switch(ctx, k.t, st.New.Number); err != nil {
			return k.wrap(ctx, err)
		}
		if st.OldReplicas == 0 {
			return k.wrap(ctx, k.p.Retire(ctx, k.t))
		}
		return nil
	case spec.GetStrategy().GetCanary() != nil:
		if serving == st.New.Number && canary == 0 {
			return nil // promoted already
		}
		return k.wrap(ctx, k.p.Canary(ctx, k.t, w, st.Weight, kubeOptions(spec, total)))
	default:
		return k.wrap(ctx, k.p.Rolling(ctx, k.t, w, kubeOptions(spec, total)))
	}
}

// Rollback returns to st.New: Abort (the Service back on the stable
// Deployment at once, then that Deployment at full size and the other
// scaled to zero) when the stable revision still runs in one of the two
// Deployments, else the serving Deployment's kept ReplicaSet of that
// revision, else the stable revision applied afresh.
func (k *kubeExecutor) Rollback(ctx context.Context, st rollout.State) error {
	if st.New.Number == 0 {
		return k.wrap(ctx, k.p.Delete(ctx, k.t))
	}
	o := kubeOptions(st.New.Spec, st.NewReplicas)
	err := k.p.Abort(ctx, k.t, st.New.Number, o)
	if errors.Is(err, kubernetes.ErrNoRevision) {
		err = k.p.Rollback(ctx, k.t, st.New.Number, o)
	}
	if errors.Is(err, kubernetes.ErrNoRevision) {
		err = k.p.Rolling(ctx, k.t, kubernetes.WorkloadFor(st.New.Number, st.New.Spec), o)
	}
	return k.wrap(ctx, err)
}

// wrap marks a progress deadline, the Deployment's or the step's own
// (ctx's), as the rollout engine's, so the rollback policy treats it as a
// deadline.
func (k *kubeExecutor) wrap(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, kubernetes.ErrProgressDeadline):
		return &deadlineError{err}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &deadlineError{fmt.Errorf("no progress within the progress deadline: %w", err)}
	}
	return err
}

type deadlineError struct{ err error }

func (e *deadlineError) Error() string   { return e.err.Error() }
func (e *deadlineError) Unwrap() []error { return []error{e.err, rollout.ErrProgressDeadline} }

// kubeReplicas lists an environment's pods as replicas.
func (s *Service) kubeReplicas(ctx context.Context, app, env string, spec *deployerv1.ApplicationSpec) ([]*deployerv1.Replica, error) {
	k := s.kubeExecutor(app, env, spec)
	st, err := k.p.Status(ctx, k.t)
	if err != nil {
		return nil, err
	}
	var out []*deployerv1.Replica
	for _, pod := range st.Pods {
		r := &deployerv1.Replica{
			Id: pod.Name, Name: pod.Name, Application: app, Environment: env, Revision: uint32(pod.Revision),
			Driver: deployerv1.DriverKind_DRIVER_KIND_KUBERNETES, Restarts: pod.Restarts, Reason: pod.Reason,
			HostAddress: pod.IP,
			DriverStatus: &deployerv1.Replica_Kubernetes{Kubernetes: &deployerv1.KubernetesPodStatus{
				Namespace: st.Namespace, PodName: pod.Name, Phase: string(pod.Phase), Ready: pod.Ready,
				NotReadyReason: pod.Reason, NodeName: pod.Node, PodIp: pod.IP,
			}},
		}
		if !pod.StartedAt.IsZero() {
			r.StartTime = timestamppb.New(pod.StartedAt)
		}
		switch {
		case pod.Phase == "Running" && pod.Ready:
			r.State, r.Health = deployerv1.ReplicaState_REPLICA_STATE_RUNNING, deployerv1.HealthState_HEALTH_STATE_HEALTHY
		case pod.Phase == "Running":
			r.State, r.Health = deployerv1.ReplicaState_REPLICA_STATE_RUNNING, deployerv1.HealthState_HEALTH_STATE_PENDING
		case pod.Phase == "Pending":
			r.State = deployerv1.ReplicaState_REPLICA_STATE_STARTING
		case pod.Phase == "Succeeded":
			r.State = deployerv1.ReplicaState_REPLICA_STATE_STOPPED
		case pod.Phase == "Failed":
			r.State = deployerv1.ReplicaState_REPLICA_STATE_FAILED
		}
		r.InRotation = pod.Ready && st.Service != nil && servesRevision(st, pod.Revision)
		out = append(out, r)
	}
	return out, nil
}

func servesRevision(st kubernetes.Status, rev int64) bool {
	for _, r := range st.ServingRevisions {
		if r == rev {
			return true
		}
	}
	return false
}

// kubeEndpoint is where an environment's Service answers inside the
// cluster: its DNS name and first port.
func kubeEndpoint(app, env string, spec *deployerv1.ApplicationSpec) string {
	host := kubernetes.TargetFor(app, env, spec.GetDriver().GetKubernetes()).ServiceHost()
	if ports := spec.GetPorts(); len(ports) > 0 {
		return "http://" + host + ":" + strconv.Itoa(int(ports[0].GetContainerPort()))
	}
	return "http://" + host
}

// kubeStatus maps the platform's errors that are not already gRPC statuses.
func kubeStatus(err error) error {
	switch {
	case errors.Is(err, kubernetes.ErrNotReady):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, kubernetes.ErrNoRevision):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return nil
}

// openKubernetes connects the kubernetes driver when the configuration
// names a cluster; a cluster that does not answer is an error then, as a
// driver asked for must work.
func openKubernetes(cfg Config, log *slog.Logger) (*kubernetes.Platform, error) {
	if cfg.Kubeconfig == "" {
		return nil, nil
	}
	kc := kubernetes.Config{Kubeconfig: cfg.Kubeconfig, Context: cfg.KubeContext}
	if cfg.Kubeconfig == InCluster {
		kc = kubernetes.Config{InCluster: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := kubernetes.New(ctx, kc, log.With("driver", "kubernetes"))
	if err != nil {
		return nil, fmt.Errorf("deployer: kubernetes driver: %w", err)
	}
	return p, nil
}

// InCluster as Config.Kubeconfig uses the pod's service account.
const InCluster = "in-cluster"
