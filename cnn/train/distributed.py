"""Many processes, one training run: join them through ``jax.distributed`` before JAX starts a backend.

Every process runs the same command. After :func:`initialize`, ``jax.devices()`` lists the devices of all
processes, the mesh of :class:`cnn.train.experiment.Experiment` spans them, each process feeds its slice of every
global batch, and ``jit`` reduces gradients across processes. Nothing else changes.

When ``jax.distributed.initialize`` is called (jax 0.10.2, ``jax/_src/distributed.py`` and ``jax/_src/clusters``):

- **Config**: ``config.distributed.coordinator_address`` (``host:port`` of process 0), ``num_processes`` and
  ``process_id``, all three or none.
- **A cluster JAX detects itself**, with the keys unset:
  SLURM (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``,
  ``SLURM_STEP_NUM_NODES`` all set, ``SLURM_NTASKS`` > 1), Open MPI's ``mpirun`` (``OMPI_MCA_orte_hnp_uri`` set,
  ``OMPI_COMM_WORLD_SIZE`` > 1), a Cloud TPU VM (JAX found libtpu and TPU chips: it asks the metadata server for
  the slice's workers, so a one-host slice is a group of one), or a TPU slice on GKE (``TPU_WORKER_HOSTNAMES`` or
  ``TPU_PROCESS_ADDRESSES`` with more than one host). There JAX chooses address, count and id
  (``JAX_COORDINATOR_ADDRESS`` or ``JAX_COORDINATOR_PORT`` override the address).
- Otherwise it is not called: one process, every local device (a single machine with several GPUs needs nothing).
  A single SLURM or MPI task counts as a single machine. ``JAX_COORDINATOR_ADDRESS`` without such a cluster is an
  error, since JAX would have no process count or id.

Kubernetes Jobs and ``mpi4py`` detection (which need extra packages) are left to the config keys.

Joining waits at most ``config.distributed.initialization_timeout`` seconds (300, JAX's default); past that the
process exits with one ``error:`` line that names the coordinator's address (jaxlib's runtime would abort with a
C++ stack trace). On CPU the processes reduce through gloo (``jax_cpu_collectives_implementation``, already the
default in jax 0.10.2; set if unset), so a laptop can run two processes on loopback. Process 0 alone writes logs,
metrics and summaries (:func:`is_primary`); checkpoints are written by all processes together through orbax, into
a directory they must all see (:func:`check_shared_directory`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from cnn.errors import ConfigError, UserError

KEYS = ("coordinator_address", "num_processes", "process_id")
ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")
DEFAULT_TIMEOUT = 300  # seconds, as jax.distributed.initialize
JAX_TIMEOUT_GRACE = 10  # seconds JAX's own deadline trails ours, so that ours reports the failure
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                   "SLURM_STEP_NUM_NODES")


def validate(settings: Mapping[str, Any]) -> bool:
    """Check ``config.distributed``; True when it names the processes (all three keys), False when it leaves
    them to JAX's detection (none of them)."""
    timeout = settings.get("initialization_timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not (isinstance(timeout, int | float) and timeout > 0):
        raise ConfigError(f"config.distributed.initialization_timeout must be a positive number of seconds, "
                          f"got {timeout!r}")
    given = {key: settings.get(key) for key in KEYS}
    unset = [key for key, value in given.items() if value is None]
    if len(unset) == len(KEYS):
        return False
    if unset:
        named = [f"config.distributed.{key}" for key in KEYS]
        raise ConfigError(f"set all of {', '.join(named)} or none of them (missing: "
                          f"{', '.join(f'config.distributed.{key}' for key in unset)})")
    address, count, index = given["coordinator_address"], given["num_processes"], given["process_id"]
    match = ADDRESS.match(address) if isinstance(address, str) else None
    if not (match and 0 < int(match["port"]) < 65536):
        raise ConfigError(f"config.distributed.coordinator_address must be 'host:port' (port 1-65535) of process 0, "
                          f"got {address!r}")
    if isinstance(count, bool) or not (isinstance(count, int) and count >= 1):
        raise ConfigError(f"config.distributed.num_processes must be a positive integer, got {count!r}")
    if isinstance(index, bool) or not (isinstance(index, int) and 0 <= index < count):
        raise ConfigError(f"config.distributed.process_id must be in [0, num_processes={count}), got {index!r}")
    return True


def detected_cluster(environ: Mapping[str, str] = os.environ) -> str | None:
    """The kind of multi-process launch JAX can configure itself from ``environ``, or None."""
    if all(name in environ for name in SLURM_VARIABLES) and _count(environ["SLURM_NTASKS"]) > 1:
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in environ and _count(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "Open MPI"
    hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
    if len(hosts.split(",")) > 1:
        return "TPU slice (GKE)"
    if _on_cloud_tpu_vm():
        return "Cloud TPU VM"
    return None


def initialize(settings: Mapping[str, Any]) -> bool:
    """Join the other processes of the run (see the module docstring); True if ``jax.distributed`` was started.

    ``settings`` is ``config.distributed``. Call before anything touches a JAX backend (``jax.devices()``, an
    array): JAX refuses to start the distributed runtime after that.
    """
    explicit = validate(settings)
    cluster = None if explicit else detected_cluster()
    if not explicit and cluster is None:
        if os.environ.get("JAX_COORDINATOR_ADDRESS"):
            raise ConfigError("JAX_COORDINATOR_ADDRESS is set but no SLURM, Open MPI or TPU launch gives the process "
                              "count and id: set config.distributed.coordinator_address, num_processes and process_id")
        return False
    if jax.distributed.is_initialized():
        return True
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = settings.get("initialization_timeout", DEFAULT_TIMEOUT)
    address = settings.get("coordinator_address")
    with _deadline(timeout, lambda: _join_failure(settings, address, cluster, timeout)):
        try:
            jax.distributed.initialize(
                coordinator_address=address,
                num_processes=settings.get("num_processes"),
                process_id=settings.get("process_id"),
                initialization_timeout=int(timeout) + JAX_TIMEOUT_GRACE,
            )
        except (RuntimeError, ValueError) as error:  # e.g. a port taken, or what a cluster left unset
            hint = " (process 0 serves the coordinator: is its port free on this host?)" if (
                settings.get("process_id") == 0) else ""
            raise UserError(f"{_who(settings)} could not start jax.distributed ({_where(address, cluster)}): "
                            f"{_first_line(error)}{hint}") from None
    return True


def is_primary() -> bool:
    """True in the process that writes logs, metrics and summaries (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def check_shared_directory(directory: str) -> None:
    """Fail on every process unless all of them see ``directory`` as one directory (a file system every host
    mounts: NFS, GCS through a mount, ...). Orbax writes each checkpoint from all processes together and
    finalizes it on process 0, so a directory local to each host would hold no complete checkpoint."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    os.makedirs(directory, exist_ok=True)
    token = int(multihost_utils.broadcast_one_to_all(np.int32(secrets.randbits(31))))
    marker = os.path.join(directory, f".shared-check-{token}")
    if is_primary():
        with open(marker, "w"):
            pass
    barrier(f"shared-check-written-{token}")
    seen = np.asarray(multihost_utils.process_allgather(np.bool_(os.path.exists(marker)))).reshape(-1)
    if is_primary():
        os.remove(marker)
    blind = [index for index, ok in enumerate(seen) if not ok]
    if blind:
        raise UserError(f"{directory} must be one directory that every process sees (a shared file system): "
                        f"process(es) {blind} do not see the file process 0 wrote there")


@contextlib.contextmanager
def _deadline(seconds: float, explain: Callable[[], str]) -> Iterator[None]:
    """Exit with ``error: <explain()>`` (status 2) if the block is still running after ``seconds``.

    When joining times out, the distributed runtime of jaxlib 0.10.2 aborts the process from C++ (a fatal log with
    a stack trace, no Python exception), and it blocks the main thread meanwhile; so a timer thread, due before
    the runtime's own deadline (``JAX_TIMEOUT_GRACE`` later), reports it as one line and ends the process.
    """
    finished = threading.Event()

    def give_up() -> None:
        if not finished.is_set():
            print(f"error: {explain()}", file=sys.stderr, flush=True)
            os._exit(2)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        finished.set()
        timer.cancel()


def _join_failure(settings: Mapping[str, Any], address: str | None, cluster: str | None, timeout: float) -> str:
    if address and settings.get("process_id") != 0 and not _answers(address):
        reason = f"nothing answers at {address}: is process 0 running there, and reachable from this host?"
    else:
        count = settings.get("num_processes") or "all"
        reason = f"not all {count} processes joined {_where(address, cluster)}: did every one start?"
    return (f"{_who(settings)} could not join the run within {timeout} s "
            f"(config.distributed.initialization_timeout): {reason}")


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except OSError:
        return False


def _who(settings: Mapping[str, Any]) -> str:
    index, count = settings.get("process_id"), settings.get("num_processes")
    return "this process" if index is None else f"process {index} of {count}"


def _where(address: str | None, cluster: str | None) -> str:
    return f"the coordinator at {address}" if address else f"the coordinator that {cluster} gives"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _count(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 1


def _on_cloud_tpu_vm() -> bool:
    """JAX's own answer (set when ``import jax`` found libtpu and TPU chips); private, so read defensively."""
    try:
        from jax._src import cloud_tpu_init
    except ImportError:
        return False
    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))
