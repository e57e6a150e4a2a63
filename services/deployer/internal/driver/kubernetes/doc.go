// Package kubernetes is the deployer's Kubernetes platform: it runs an
// application environment as Deployments and a Service, written as typed
// objects with server-side apply under the field manager
// "opsuite-deployer" (never YAML text, never kubectl), and reads their
// state through watches and informers.
//
// Unlike the docker and process drivers it does not implement
// driver.Driver: Kubernetes owns replicas (a Deployment's ReplicaSet starts
// and stops pods), so per-replica Start/Stop would fight its controllers.
// The rollout engine calls strategy-level operations instead:
//
//   - Rolling applies a revision to the serving Deployment and lets the
//     Deployment controller roll it with maxSurge/maxUnavailable, watching
//     the rollout until it completes or its progress deadline passes
//     (ErrProgressDeadline); Rollback returns the Deployment to a revision
//     kept in its ReplicaSet history, as `kubectl rollout undo` does.
//   - Preview, Switch and Retire are blue-green: the new revision runs in
//     the second Deployment ("slot") at full size, Switch changes the
//     Service selector in one apply, Retire scales the old slot to zero.
//   - Canary splits the replicas between the slots by weight and lets the
//     Service select both: traffic follows the replica ratio. With a
//     Gateway (Target.Gateway, "namespace/name") on a cluster that serves
//     gateway.networking.k8s.io/v1 HTTPRoutes (asked through discovery,
//     remembered for 30s), the platform also keeps a Service per slot and
//     an HTTPRoute attached to that Gateway whose two backends (the slot
//     Services) carry exactly the canary's weight and the rest, while the
//     replicas still split by ratio. Promotion, Abort and Switch put 100 on
//     one slot. A Gateway on a cluster without the Gateway API CRDs falls
//     back to the replica ratio (logged, not an error). Abort gives
//     everything back to the stable revision at once.
//   - Scale, Status (from informers), Changes and Delete.
//
// Every environment has two Deployments, "<base>-blue" and "<base>-green",
// and one Service "<base>", where base is the application name in the
// environment's own namespace ("<app>-<environment>", the default) or
// "<app>-<environment>" in a namespace named by the user; with HTTPRoutes
// also the Services "<base>-blue" and "<base>-green" and the HTTPRoute
// "<base>" (written with the dynamic client from typed Go values, by
// server-side apply like the rest; removed when the Gateway option goes). Everything
// carries the driver labels (driver.LabelManagedBy and friends); an object
// without them is never changed or deleted, and one whose name or selector
// clashes with the environment's makes the operation fail with
// ErrNotOwned (gRPC FailedPrecondition). Bad input fails before any call to
// the cluster with a *validation.Error that wraps driver.ErrInvalidSpec.
package kubernetes
