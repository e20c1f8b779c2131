"""An embedded PostgreSQL for tests and the sandbox: real server, TCP on 127.0.0.1, TLS.

The binaries come from the ``pgserver`` wheel (PostgreSQL 16), so nothing has
to be installed system-wide; ``TICKER_PG_BINDIR`` points at another install.
Those binaries are built without OpenSSL, so TLS is terminated in front of the
server by :class:`sandbox.tcp_proxy.TcpProxy` speaking PostgreSQL's SSLRequest
negotiation, the shape of RDS Proxy in AWS: clients connect exactly as the
Lambdas connect to RDS (verified TLS, SCRAM password), and the same proxy can
drop connections on command for adversity tests. PostgreSQL refuses to run as
root; as root the server runs as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess  # nosec B404 # runs PostgreSQL's own binaries with fixed arguments
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sandbox.tcp_proxy import TcpProxy

SERVICE_USER_CANDIDATES = ("postgres", "tickerpg")
START_TIMEOUT_S = 30.0


class PostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_bindir() -> Path:
    """Directory holding ``initdb`` and ``postgres``."""
    override = os.environ.get("TICKER_PG_BINDIR")
    if override:
        return Path(override)
    import pgserver  # imported lazily: a DATABASE_URL user does not need it

    bindir = Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"
    if not (bindir / "postgres").exists():
        raise PostgresError(f"no PostgreSQL binaries in {bindir}; set TICKER_PG_BINDIR")
    return bindir


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run as when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USER_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(  # nosec B603 B607 # fixed arguments
        ["useradd", "--system", "--no-create-home", SERVICE_USER_CANDIDATES[-1]],  # noqa: S607
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(SERVICE_USER_CANDIDATES[-1])


def _make_tls_material(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1; returns (cert, key).

    The certificate is its own CA, so clients verify it by trusting the file.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass(frozen=True)
class ConnectionInfo:
    """How to reach the server: a DSN plus the CA file to verify its TLS certificate."""

    host: str
    port: int
    user: str
    password: str
    database: str
    ca_file: Path | None

    @property
    def dsn(self) -> str:
        """A libpq/asyncpg URL (TLS required)."""
        return (
            f"postgresql://{quote(self.user)}:{quote(self.password)}@{self.host}:{self.port}/"
            f"{quote(self.database)}?sslmode=require"
        )

    def with_port(self, port: int) -> ConnectionInfo:
        """The same credentials through another port (e.g. a TCP proxy)."""
        return ConnectionInfo(
            self.host, port, self.user, self.password, self.database, self.ca_file
        )


class EmbeddedPostgres:
    """A private PostgreSQL cluster in a temporary directory, behind a TLS front.

    ``start()`` initialises (once) and starts it; ``stop()`` and ``start()``
    again restart it with the same data while the TLS front keeps its port,
    which is how tests simulate a database restart mid-run; ``close()`` stops
    both and removes the data directory. ``info`` is the TLS endpoint clients
    use; ``direct_info`` is the plaintext server behind it (benchmarks use it to
    measure the database rather than the emulation's proxy).
    """

    def __init__(self, base_dir: Path | None = None, port: int | None = None) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="ticker-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self.port = port or free_port()
        self.server_port = free_port()
        self.password = secrets.token_urlsafe(18)
        self.bindir = find_bindir()
        self._user = _service_user()
        self._process: subprocess.Popen[bytes] | None = None
        self._ca_file: Path | None = None
        self._front: TcpProxy | None = None

    # -- lifecycle ---------------------------------------------------------------

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        user = self._user.pw_name if self._user else None
        result = subprocess.run(  # nosec B603 # PostgreSQL binaries, fixed arguments
            list(args), capture_output=True, user=user, check=False
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{Path(args[0]).name} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result

    def _initdb(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        self.socket_dir.mkdir(exist_ok=True)
        password_file = self.base_dir / "pwfile"
        password_file.write_text(self.password + "\n")
        if self._user:
            for path in (self.base_dir, self.socket_dir, password_file):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-sync",
            f"--pwfile={password_file}",
        )
        password_file.unlink()
        # Loopback TCP needs a password; the Unix socket (readiness probe) is trusted.
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _start_tls_front(self) -> None:
        tls_dir = self.base_dir / "tls"
        tls_dir.mkdir(exist_ok=True)
        cert, key = _make_tls_material(tls_dir)
        self._ca_file = cert
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        self._front = TcpProxy("127.0.0.1", self.server_port, postgres_tls=context)
        self._front.port = self.port
        self._front.start()

    def start(self) -> ConnectionInfo:
        """Start the server (initialising the cluster on first use); wait until ready."""
        if self._process and self._process.poll() is None:
            return self.info
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        log = self.log_path.open("ab")
        user = self._user.pw_name if self._user else None
        self._process = subprocess.Popen(  # nosec B603 # fixed arguments
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.server_port),
                "-k",
                str(self.socket_dir),
                # fsync off is safe for a process crash (the OS keeps the pages);
                # synchronous_commit stays on, as on RDS, so a commit survives one.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()
        if self._front is None:
            self._start_tls_front()
        return self.info

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        isready = str(self.bindir / "pg_isready")
        while time.monotonic() < deadline:
            if self._process and self._process.poll() is not None:
                raise PostgresError(f"postgres exited early; log: {self.tail_log()}")
            probe = subprocess.run(  # nosec B603 # fixed arguments
                [
                    isready,
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(self.server_port),
                    "-U",
                    "postgres",
                ],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        raise PostgresError(f"postgres not ready after {START_TIMEOUT_S}s; log: {self.tail_log()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean) or ``immediate`` (like a crash)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        signal_for_mode = {"smart": 15, "fast": 2, "immediate": 3}
        process.send_signal(signal_for_mode[mode])
        try:
            process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, mode: str = "fast") -> ConnectionInfo:
        """Stop and start again on the same port with the same data."""
        self.stop(mode)
        return self.start()

    def close(self) -> None:
        """Stop the server and its TLS front and remove their files."""
        self.stop()
        if self._front is not None:
            self._front.close()
            self._front = None
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- facts -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The postmaster's process id (benchmarks read server CPU from it)."""
        if self._process is None:
            raise PostgresError("server not started")
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def info(self) -> ConnectionInfo:
        """The TLS endpoint for the ``postgres`` database (what clients use)."""
        return ConnectionInfo(
            "127.0.0.1", self.port, "postgres", self.password, "postgres", self._ca_file
        )

    @property
    def direct_info(self) -> ConnectionInfo:
        """The plaintext server behind the TLS front (for measuring the database itself)."""
        return ConnectionInfo(
            "127.0.0.1", self.server_port, "postgres", self.password, "postgres", None
        )

    @property
    def front(self) -> TcpProxy:
        """The TLS front, to drop or refuse client connections on command."""
        if self._front is None:
            raise PostgresError("server not started")
        return self._front

    def tail_log(self, chars: int = 2000) -> str:
        """The end of the server log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"
