//! Rendering of every Kubernetes object vast sends to a cluster (robovast pod, Kueue queues,
//! Jobs) and `prepare-run`. Pure functions of the project, the cluster config and listed objects.
