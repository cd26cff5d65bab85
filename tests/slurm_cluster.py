"""A single-node SLURM cluster on 127.0.0.1 for the tests: munged, slurmctld and slurmd from Debian's packages
(`apt-get install slurm-wlm munge`, done by .ci/run), all state under a temporary directory.

The SLURM executor plugin removes SLURM_CONF before the in-job `srun`, so the configuration must be the system
one, /etc/slurm/slurm.conf: it is written there only when no other configuration exists, and removed again by
stop(). The daemons run as root (a throw-away test node) and are stopped by the PIDs they wrote.
The node advertises more CPUs and memory than the machine has (SlurmdParameters=config_overrides) so that the
workflow profile's real per-rule requests (16 cores, 128 GB for training) can be scheduled on a laptop-sized
test machine; no accounting daemon runs, so job status comes from squeue.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# audioclip-pipeline test cluster"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # the clients' compiled-in default


def available() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if not shutil.which(b)]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the test cluster's daemons need root"
    if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text():
        return f"{SYSTEM_CONF} belongs to a real SLURM installation; not overwriting it"
    return None


@dataclass
class Cluster:
    root: Path
    pid_files: list[Path] = field(default_factory=list)

    def run(self, *cmd: str, timeout: float = 30) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout

    def stop(self) -> None:
        for pid_file in reversed(self.pid_files):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass  # not running (any more)
        if SYSTEM_CONF.exists() and MARKER in SYSTEM_CONF.read_text():
            SYSTEM_CONF.unlink()


def start(root: Path, cpus: int = 32, memory_mb: int = 262144) -> Cluster:
    root = Path(root)
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root)
    try:
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        pid = root / "munge" / "munged.pid"
        subprocess.run(["munged", "--force", f"--socket={MUNGE_SOCKET}", f"--pid-file={pid}",
                        f"--log-file={root / 'log' / 'munged.log'}", f"--seed-file={root / 'munge' / 'seed'}"],
                       check=True, timeout=30)
        cluster.pid_files.append(pid)
        host = socket.gethostname().split(".")[0]
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.write_text(f"""{MARKER}
ClusterName=audioclip-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        subprocess.run(["slurmctld"], check=True, timeout=60)
        cluster.pid_files.append(root / "slurmctld.pid")
        subprocess.run(["slurmd"], check=True, timeout=60)
        cluster.pid_files.append(root / "slurmd.pid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                state = cluster.run("sinfo", "-h", "-o", "%T").strip()
            except subprocess.SubprocessError:
                state = ""
            if state == "idle":
                return cluster
            time.sleep(0.5)
        raise RuntimeError(f"the test node did not become idle; logs in {root / 'log'}")
    except BaseException:
        cluster.stop()
        raise
