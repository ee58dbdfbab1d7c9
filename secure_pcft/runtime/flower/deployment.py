"""Deployment helpers: TLS certificates, SuperNode keys, the ``flwr`` CLI connection, processes.

A deployment is one SuperLink (the relay host) and, per site, one SuperNode in ``process``
isolation plus secure-pcft's ClientApp host (:mod:`.executor`). docs/deploying.md gives the
commands; the functions here produce the same files and start the same processes, so tests and
``secure-pcft flower ...`` follow the documented path. Every process gets its own process group
and is stopped (SIGTERM, then SIGKILL) by :meth:`Processes.stop_all`. Every child gets
:func:`child_env`: flwr's SuperLink and SuperNode start flwr's helpers (``flower-superexec``,
``flwr-serverapp``, ...) by bare name from ``PATH``, so this environment's ``bin`` goes first even
when the environment is not activated.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secure_pcft.runtime.flower.errors import DeploymentError
from secure_pcft.runtime.flower.site import SiteSpec

APP_DIR = Path(__file__).with_name("app")  # the Flower app `flwr run` submits


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the consortium CA (public), the SuperLink's certificate and private key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
              days: int = 30) -> TlsFiles:  # fmt: skip
    """A private CA and a SuperLink certificate for ``hosts`` (IPs or DNS names), ECDSA P-384.

    The CA key is discarded after signing (a test/one-off CA); sites only need ``ca.crt``.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secure-pcft consortium CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    files = TlsFiles(directory / "ca.crt", directory / "server.pem", directory / "server.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        files.server_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return files


def write_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode authentication key pair (ECDSA P-384, OpenSSH format): (private, public)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / f"{name}.node-key", directory / f"{name}.node-key.pub"
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return private, public


def write_flwr_home(home: Path, connection: str, address: str, ca_cert: Path | None) -> Path:
    """A ``FLWR_HOME`` whose ``config.toml`` names the SuperLink connection ``connection``."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    tls = f'root-certificates = "{ca_cert}"' if ca_cert else "insecure = true"
    path = home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{connection}"\n\n[superlink.{connection}]\n'
        f'address = "{address}"\n{tls}\n'
    )
    return path


def tool(name: str) -> str:
    """Path of a console script of this environment (``flwr``, ``flower-superlink``, ...)."""
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise DeploymentError(
            f"{name} not found; install the extra: pip install 'secure-pcft[flower]'"
        )
    return found


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: ``os.environ``) for a child process, with ``PATH`` starting with
    this interpreter's ``bin`` directory (the rest of ``PATH`` is kept after it)."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    rest = env.get("PATH", os.defpath)
    if rest.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = bin_dir + os.pathsep + rest if rest else bin_dir
    return env


@dataclass
class Processes:
    """Processes started for a deployment, each in its own process group, with log files.

    ``env`` is the children's environment; each is started with :func:`child_env` of it.
    """

    log_dir: Path
    env: dict[str, str] = field(default_factory=child_env)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(self.env),
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, wait_s: float = 10.0) -> None:
        """Stop one process group: ``sig``, then SIGKILL after ``wait_s``."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, s)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait(timeout=wait_s)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, wait_s=5.0)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5
) -> None:
    """Poll ``predicate()`` until true.

    Raises:
        DeploymentError: still false after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise DeploymentError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass(frozen=True)
class SiteLaunch:
    """How one site joins: its SuperNode's connection and its ClientApp host's site.

    Attributes:
        superlink: the SuperLink's Fleet address, host:port.
        runtime_port: loopback port of this SuperNode's Runtime API (the ClientApp host's link).
        ca_cert: consortium CA certificate (TLS on); None = ``--insecure`` (tests of plain mode only).
        node_key: the SuperNode's private authentication key (OpenSSH EC), or None.
    """

    superlink: str
    runtime_port: int
    ca_cert: Path | None
    node_key: Path | None


def supernode_argv(launch: SiteLaunch, site: SiteSpec) -> list[str]:
    """``flower-supernode`` arguments for ``site`` (``process`` isolation, node config = site)."""
    node_config = f'site-dir="{site.site_dir}" config="{site.config}" peer-id="{site.peer_id}"' + (
        f' key-dir="{site.key_dir}"' if site.key_dir else ""
    )
    argv = [tool("flower-supernode"), "--superlink", launch.superlink]
    argv += ["--root-certificates", str(launch.ca_cert)] if launch.ca_cert else ["--insecure"]
    if launch.node_key:
        argv += ["--auth-supernode-private-key", str(launch.node_key)]
    argv += ["--isolation", "process", "--host", "127.0.0.1", "--port", str(launch.runtime_port)]
    return [*argv, "--node-config", node_config]


def run_site(launch: SiteLaunch, site: SiteSpec, log_dir: Path, restart_s: float = 5.0) -> None:
    """Run this site's SuperNode (same process group) and host its ClientApp until SIGTERM/SIGINT.

    The SuperNode is restarted whenever it exits: after a crash the SuperLink refuses to activate
    the same node again until its last session expires (missed heartbeats, about a minute), so a
    restarted site keeps trying, as a service manager would. It is stopped when this returns.
    """
    import threading

    from secure_pcft.runtime.flower.executor import serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log_dir.mkdir(parents=True, exist_ok=True)
    supernode: list[subprocess.Popen[bytes]] = []
    env = child_env()

    def supervise() -> None:
        while not stop.is_set():
            if not supernode or supernode[-1].poll() is not None:
                with (log_dir / f"supernode-{site.peer_id}.log").open("ab") as out:
                    supernode.append(
                        subprocess.Popen(
                            supernode_argv(launch, site),
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            env=env,
                        )
                    )
            stop.wait(restart_s)

    watcher = threading.Thread(target=supervise, daemon=True)
    watcher.start()
    try:
        serve(f"127.0.0.1:{launch.runtime_port}", stop=stop, warm=site)
    finally:
        stop.set()
        watcher.join()
        for proc in supernode:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
