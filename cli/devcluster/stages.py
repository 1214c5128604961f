"""kwok stages of the simulated cluster: how fake kubelets move nodes and pods through their lives.

kwok nodes run nothing, so no probe can really run. The stages stand in for the kubelet:

* Healthy pods (the default): kwok's own `pod-ready` stage, unchanged except that it skips the fault images
  below. It marks init containers Completed and the containers Running and Ready at once, which is what a kubelet
  reports after the model download finished and the startup and readiness probes on the health route passed.
  Readiness therefore means "the kubelet would have probed it healthy"; the probes are still in the manifest
  and validated by the API server, they are just never executed.
* Faults are chosen by the container image reference, under the reserved `.invalid` top-level domain, so a test
  (or a user trying the provider) triggers them with an ordinary custom image URL through any layer - the API,
  the worker or the provider - without test-only hooks in production code:

  ==================================  =============================================================
  image prefix                        what the fake kubelet reports
  ==================================  =============================================================
  ``unpullable.kwok.invalid/``        Pending, container waiting ``ImagePullBackOff`` (no such host)
  ``crashloop.kwok.invalid/``         Running, waiting ``CrashLoopBackOff``, last state ``Error`` exit 1
  ``oomkilled.kwok.invalid/``         Running, waiting ``CrashLoopBackOff``, last state ``OOMKilled`` 137
  ``neverready.kwok.invalid/``        Running but never Ready (a model load that never finishes)
  ==================================  =============================================================

  The termination message of crash loops can be set with the pod annotation
  ``kwok.endpointctl.io/termination-message`` (default: a Python traceback's last line).
* Nodes: kwok's `node-initialize` and `node-heartbeat-with-lease` stages, read from the kwok release that
  scripts/build-kube.sh built (copied next to the binaries), so they stay in step with the kwok version, plus
  kwok's `node-not-ready` chaos stage: a node labelled `node-not-ready.stage.kwok.x-k8s.io=true` reports
  Ready=False, the node-lifecycle controller taints it `node.kubernetes.io/not-ready:NoExecute` and the taint
  manager evicts its pods, as with a real unhealthy kubelet. Removing the label makes it Ready again.
* Logs: kwok serves `RUNTIME_LOG` (CRI log format) as the log of every `runtime` container, through the API
  server's pods/log, so `endpointctl logs` can be exercised.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

FAULT_DOMAIN = "kwok.invalid"
FAULT_PREFIXES = {
    "image-pull": f"unpullable.{FAULT_DOMAIN}/",
    "crash-loop": f"crashloop.{FAULT_DOMAIN}/",
    "oom-killed": f"oomkilled.{FAULT_DOMAIN}/",
    "never-ready": f"neverready.{FAULT_DOMAIN}/",
}
TERMINATION_MESSAGE_ANNOTATION = "kwok.endpointctl.io/termination-message"

# kwok's shipped stages used as they are (copied by scripts/build-kube.sh from the kwok module).
KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "node/chaos/node-not-ready.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-delete.yaml",
)
# kwok's chaos stage: a node with this label reports Ready=False (its "kubelet" says it is unhealthy).
NODE_NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"


def _image_has_prefix(prefix: str) -> dict:
    return {"key": f'.spec.containers.[].image | startswith("{prefix}")', "operator": "In", "values": ["true"]}


_NOT_DELETED = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}

_INIT_DONE_AND_IPS = """
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            finishedAt: {{ $now | Quote }}
            reason: Completed
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ with NodeIPWith .spec.nodeName }}
      hostIP: {{ . | Quote }}
      {{ end }}
      {{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ . | Quote }}
      {{ end }}
      startTime: {{ $now | Quote }}
"""

_NOT_READY_CONDITIONS = """
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        message: "containers with unready status: [{{ range .spec.containers }}{{ .name }} {{ end }}]"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: ContainersReady
"""


def _fault_stage(name: str, prefix: str, phase_from: str, container_status: str, phase: str) -> dict:
    template = "      {{ $now := Now }}\n" + _NOT_READY_CONDITIONS + """
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: false
""" + container_status + _INIT_DONE_AND_IPS + f"      phase: {phase}\n"
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": [
                _NOT_DELETED,
                {"key": ".status.phase", "operator": "In", "values": [phase_from]},
                _image_has_prefix(prefix),
                # Apply once: a stage whose selector still matches after it ran would fire forever.
                {"key": ".status.containerStatuses.[].started", "operator": "DoesNotExist"},
            ]},
            "delay": {"durationMilliseconds": 200, "jitterDurationMilliseconds": 400},
            "next": {"statusTemplate": textwrap.dedent(template)},
        },
    }


_CRASH_STATUS = """        restartCount: 5
        state:
          waiting:
            reason: CrashLoopBackOff
            message: "back-off 2m40s restarting failed container={{{{ .name }}}}"
        lastState:
          terminated:
            exitCode: {exit_code}
            reason: {reason}
            message: {{{{ or ( index ( or $.metadata.annotations dict ) "{annotation}" ) "{message}" | Quote }}}}
            startedAt: {{{{ $now | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
"""

_IMAGE_PULL_STATUS = """        restartCount: 0
        state:
          waiting:
            reason: ImagePullBackOff
            message: {{ printf "Back-off pulling image %q: ErrImagePull: failed to resolve reference %q: dial tcp: lookup %s: no such host" .image .image ( index ( splitList "/" .image ) 0 ) | Quote }}
      {{ end }}
"""

_NEVER_READY_STATUS = """        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
"""


def fault_stages() -> list[dict]:
    crash = _CRASH_STATUS.format(exit_code=1, reason="Error", annotation=TERMINATION_MESSAGE_ANNOTATION,
                                 message="RuntimeError: simulated model server crash")
    oom = _CRASH_STATUS.format(exit_code=137, reason="OOMKilled", annotation=TERMINATION_MESSAGE_ANNOTATION,
                               message="")
    return [
        _fault_stage("endpointctl-image-pull-backoff", FAULT_PREFIXES["image-pull"], "Pending", _IMAGE_PULL_STATUS,
                     "Pending"),
        _fault_stage("endpointctl-crash-loop", FAULT_PREFIXES["crash-loop"], "Pending", crash, "Running"),
        _fault_stage("endpointctl-oom-killed", FAULT_PREFIXES["oom-killed"], "Pending", oom, "Running"),
        _fault_stage("endpointctl-never-ready", FAULT_PREFIXES["never-ready"], "Pending", _NEVER_READY_STATUS,
                     "Running"),
    ]


RUNTIME_LOG = """\
2026-01-01T00:00:00.000000000Z stderr F INFO runtime: loading model from /repository (simulated by kwok)
2026-01-01T00:00:01.000000000Z stderr F INFO runtime: model loaded; warmup done
2026-01-01T00:00:01.500000000Z stderr F INFO runtime: serving on 0.0.0.0 (health route ready)
"""


def cluster_logs(logs_file: Path) -> dict:
    """Every kwok pod's `runtime` container 'logs' the lines of `logs_file` (served through the API server)."""
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs", "metadata": {"name": "endpointctl-runtime"},
            "spec": {"selector": {}, "logs": [{"containers": ["runtime"], "logsFile": str(logs_file),
                                               "follow": False}]}}


def kwok_config(kwok_stage_dir: Path, logs_file: Path | None = None) -> str:
    """The multi-document `--config` file for kwok: its own stages (pod-ready narrowed) plus the fault stages,
    and (given `logs_file`) the container logs kwok serves for the runtime containers."""
    docs: list[dict] = []
    for rel in KWOK_STAGE_FILES:
        stage = yaml.safe_load((kwok_stage_dir / rel).read_text())
        if stage["metadata"]["name"] == "node-initialize":
            # Otherwise it would at once "repair" a node the chaos stage keeps NotReady.
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": f'.metadata.labels["{NODE_NOT_READY_LABEL}"]', "operator": "NotIn", "values": ["true"]})
        if stage["metadata"]["name"] == "pod-ready":
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": f'.spec.containers.[].image | contains(".{FAULT_DOMAIN}/")', "operator": "NotIn",
                 "values": ["true"]})
        docs.append(stage)
    docs.extend(fault_stages())
    if logs_file is not None:
        docs.append(cluster_logs(logs_file))
    return yaml.safe_dump_all(docs, sort_keys=False)
