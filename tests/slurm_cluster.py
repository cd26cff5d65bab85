"""A single-node SLURM cluster on 127.0.0.1 for the tests: munged, slurmctld and slurmd from Debian's packages
(`apt-get install slurm-wlm munge`, done by .ci/run), all state under a temporary directory; with
`accounting=True` also slurmdbd backed by its own MariaDB instance (`apt-get install slurmdbd
mariadb-server-core mariadb-client-core`): a fresh data directory under the temporary directory, listening only on
127.0.0.1 at a free port and on a private socket, so that `sacct` answers as on a production cluster.

The SLURM executor plugin removes SLURM_CONF before the in-job `srun`, so the configuration must be the system
one, /etc/slurm/slurm.conf: it is written there only when no other configuration exists, and removed again by
stop(). The daemons run as root (a throw-away test node) and are stopped by the PIDs they wrote.
The node advertises more CPUs and memory than the machine has (SlurmdParameters=config_overrides) so that the
workflow profile's real per-rule requests (16 cores, 128 GB for training) can be scheduled on a laptop-sized
test machine. Without accounting, job status comes from squeue (sacct has nothing to ask).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
DBD_CONF = SYSTEM_CONF.with_name("slurmdbd.conf")  # slurmdbd reads it beside slurm.conf
MARKER = "# audioclip-pipeline test cluster"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # the clients' compiled-in default


def available(accounting: bool = False) -> str | None:
    """Why a cluster (with accounting: slurmdbd and MariaDB too) cannot be started here, or None."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if not shutil.which(b)]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge)"
    if accounting:
        missing = [b for b in ("slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb")
                   if not shutil.which(b)]
        if missing:
            return (f"SLURM accounting is not installed ({', '.join(missing)} missing; .ci/run installs slurmdbd, "
                    "mariadb-server-core and mariadb-client-core)")
    if os.geteuid() != 0:
        return "the test cluster's daemons need root"
    for conf in (SYSTEM_CONF, DBD_CONF):
        if conf.exists() and MARKER not in conf.read_text():
            return f"{conf} belongs to a real SLURM installation; not overwriting it"
    return None


@dataclass
class Cluster:
    root: Path
    pid_files: list[Path] = field(default_factory=list)

    def run(self, *cmd: str, timeout: float = 30) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout

    def stop(self) -> None:
        """Cancel what is still queued or running (a test that failed or timed out leaves jobs behind), then stop
        the daemons in the reverse order of their start, each by its PID."""
        if (self.root / "slurmctld.pid").exists():
            try:
                subprocess.run(["scancel", "--user", "root"], capture_output=True, timeout=20)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and self.run("squeue", "-h", "-o", "%i").strip():
                    time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass  # slurmctld is not answering: stopping the daemons is all that is left
        for pid_file in reversed(self.pid_files):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                for _ in range(200):
                    if _gone(pid):
                        break
                    time.sleep(0.05)
                else:
                    os.kill(pid, signal.SIGKILL)
                    _gone(pid)
            except (OSError, ValueError):
                pass  # not running (any more)
        for conf in (SYSTEM_CONF, DBD_CONF):
            if conf.exists() and MARKER in conf.read_text():
                conf.unlink()


def _gone(pid: int) -> bool:
    """Whether the process has exited (reaping it when it is our child: mariadbd is, the daemons are not)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, check, root: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (subprocess.SubprocessError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {seconds:.0f} s; logs in {root / 'log'}")


def _start_database(cluster: Cluster) -> tuple[int, str]:
    """A MariaDB instance of the cluster's own: data directory, socket and PID file under its root, on 127.0.0.1
    at a free port, with an empty slurm_acct_db and a user for slurmdbd. Returns (port, password)."""
    db = cluster.root / "mysql"
    db.mkdir(exist_ok=True)
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={db / 'data'}", "--user=root",
                    "--skip-test-db", "--skip-name-resolve"],
                   check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    port, sock, pid = _free_port(), db / "mysqld.sock", db / "mysqld.pid"
    with open(cluster.root / "log" / "mariadbd.out", "w") as out:
        subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={db / 'data'}", "--user=root",
                          f"--socket={sock}", f"--pid-file={pid}", f"--port={port}", "--bind-address=127.0.0.1",
                          f"--log-error={cluster.root / 'log' / 'mariadbd.log'}", "--skip-name-resolve",
                          "--innodb-lock-wait-timeout=900",        # what slurmdbd asks for (it warns otherwise)
                          "--innodb-flush-log-at-trx-commit=2"],   # a test database: no fsync per commit
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cluster.pid_files.append(pid)  # written by mariadbd itself; stop() is safe before it exists
    password = secrets.token_hex(16)
    sql = ("CREATE DATABASE slurm_acct_db; "
           f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
           "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
    # root@localhost authenticates through the socket (unix_socket) as the system's root: no password anywhere
    client = ["mariadb", "--no-defaults", f"--socket={sock}", "--user=root"]
    _wait_for("MariaDB", lambda: subprocess.run([*client, "-e", "SELECT 1"], capture_output=True,
                                                timeout=10).returncode == 0, cluster.root)
    subprocess.run([*client, "-e", sql], check=True, timeout=30, capture_output=True)
    return port, password


def _start_slurmdbd(cluster: Cluster, host: str, cluster_name: str) -> None:
    port, password = _start_database(cluster)
    fd = os.open(DBD_CONF, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # slurmdbd insists on 0600
    with os.fdopen(fd, "w") as f:
        f.write(f"""{MARKER}
AuthType=auth/munge
DbdHost={host}
DbdAddr=127.0.0.1
SlurmUser=root
PidFile={cluster.root / 'slurmdbd.pid'}
LogFile={cluster.root / 'log' / 'slurmdbd.log'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={port}
StorageUser=slurm
StoragePass={password}
StorageLoc=slurm_acct_db
""")
    subprocess.run(["slurmdbd"], check=True, timeout=60)
    cluster.pid_files.append(cluster.root / "slurmdbd.pid")
    # the first start creates slurmdbd's tables; sacctmgr answers once it listens
    _wait_for("slurmdbd", lambda: subprocess.run(["sacctmgr", "-n", "-P", "list", "cluster"], capture_output=True,
                                                  timeout=20).returncode == 0, cluster.root, seconds=120)
    # register the cluster (and with it the root account and user) before slurmctld first connects
    cluster.run("sacctmgr", "-i", "add", "cluster", cluster_name)


def start(root: Path, cpus: int = 32, memory_mb: int = 262144, accounting: bool = False) -> Cluster:
    """Start the node (with accounting: slurmdbd and its database first) and wait until it is idle."""
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
        name = "audioclip-test"
        if accounting:
            storage = "AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1"
        else:
            storage = "AccountingStorageType=accounting_storage/none"
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.write_text(f"""{MARKER}
ClusterName={name}
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
{storage}
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        if accounting:
            _start_slurmdbd(cluster, host, name)
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
