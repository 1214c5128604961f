"""`endpointctl dev cluster up|down|kubeconfig|add-node|remove-node`: the simulated GPU cluster on this machine.

The cluster keeps running after `up` returns (its processes are detached); `down` stops it. State lives in
`<data dir>/devcluster` unless `--state-dir` says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.devcluster.cluster import DevCluster
from cli.devcluster.errors import DevClusterError
from cli.errors import CliError

app = typer.Typer(help="A simulated GPU Kubernetes cluster (real control plane, kwok nodes) for the kubernetes provider.",
                  no_args_is_help=True)

StateDir = Annotated[Path | None, typer.Option("--state-dir", help="Cluster state (default: <data dir>/devcluster).")]


def _cluster(state_dir: Path | None) -> DevCluster:
    if state_dir is None:
        from common.config import get_settings

        state_dir = get_settings().data_dir / "devcluster"
    return DevCluster(state_dir)


def _run(fn):  # noqa: ANN001, ANN202 - tiny adapter
    try:
        return fn()
    except DevClusterError as exc:
        raise CliError(str(exc)) from exc


@app.command("up")
def up_cluster(
    gpu_nodes: Annotated[int, typer.Option("--gpu-nodes", min=0, help="GPU nodes to register.")] = 2,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=1, help="nvidia.com/gpu per node.")] = 8,
    instance_type: Annotated[str, typer.Option("--instance-type", help="node.kubernetes.io/instance-type of GPU nodes.")] = "nvidia-l4",
    gpu_product: Annotated[str | None, typer.Option("--gpu-product", help="nvidia.com/gpu.product (default: from the instance type).")] = None,
    cpu_nodes: Annotated[int, typer.Option("--cpu-nodes", min=0, help="CPU-only nodes to register.")] = 1,
    state_dir: StateDir = None,
) -> None:
    """Start the cluster (building the binaries on first use) and print the environment that selects it."""
    cluster = _cluster(state_dir)
    typer.echo("starting the simulated cluster (the first run builds Kubernetes from source) …", err=True)
    _run(lambda: cluster.up(gpu_nodes=gpu_nodes, gpus_per_node=gpus_per_node, instance_type=instance_type,
                            gpu_product=gpu_product, cpu_nodes=cpu_nodes))
    for key, value in cluster.env().items():
        typer.echo(f"export {key}={value}")


@app.command("down")
def down_cluster(state_dir: StateDir = None) -> None:
    """Stop every process of the cluster and delete its data."""
    _run(_cluster(state_dir).down)


@app.command("kubeconfig")
def kubeconfig(state_dir: StateDir = None) -> None:
    """Print the path of the cluster's admin kubeconfig."""
    cluster = _cluster(state_dir)
    if not cluster.is_running():
        raise CliError(f"no running cluster in {cluster.state_dir}; run `endpointctl dev cluster up`")
    typer.echo(str(cluster.kubeconfig))


@app.command("add-node")
def add_node(
    gpus: Annotated[int | None, typer.Option("--gpus", min=0, help="nvidia.com/gpu of the new node (default: the pool's).")] = None,
    instance_type: Annotated[str | None, typer.Option("--instance-type", help="Instance type of the new node.")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Add to the CPU pool instead of the GPU pool.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Node name (default: kwok-<pool>-<n>).")] = None,
    state_dir: StateDir = None,
) -> None:
    """Register one more kwok node; prints its name."""
    cluster = _cluster(state_dir)
    typer.echo(_run(lambda: cluster.add_node(pool="cpu" if cpu else "gpu", gpus=gpus, instance_type=instance_type,
                                             name=name)))


@app.command("remove-node")
def remove_node(
    name: Annotated[str | None, typer.Argument(help="Node to remove (default: the newest GPU node).")] = None,
    state_dir: StateDir = None,
) -> None:
    """Delete a node; its pods are rescheduled elsewhere (or stay Pending). Prints the removed node's name."""
    cluster = _cluster(state_dir)
    typer.echo(_run(lambda: cluster.remove_node(name)))
