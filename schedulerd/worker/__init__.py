"""The per-cluster worker and its parts: one :class:`~schedulerd.worker.cluster.ClusterWorker`
per configured cluster, composed of a reconciler (after a crash), a submitter, a poller and
a stager, sharing one :class:`~schedulerd.worker.health.ClusterHealth` and one injected
:class:`~schedulerd.worker.clock.Clock`."""
