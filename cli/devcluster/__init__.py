"""The simulated GPU cluster for the Kubernetes provider: real control plane binaries, kwok nodes.

`DevCluster(state_dir).up(...)` / `.down()` / `.kubeconfig` / `.add_node()` / `.remove_node()`; the CLI mounts
`commands.app` as `endpointctl dev cluster`, the test suite uses it through tests/fixtures/kube.py.
"""

from cli.devcluster.cluster import DevCluster
from cli.devcluster.errors import BinariesMissing, ClusterNotRunning, DevClusterError
from cli.devcluster.stages import FAULT_PREFIXES

__all__ = ["DevCluster", "DevClusterError", "BinariesMissing", "ClusterNotRunning", "FAULT_PREFIXES"]
