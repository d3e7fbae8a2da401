"""The embedded AWS: moto's threaded server with the emulation of what moto lacks, seeded.

What moto lacks is the cache-security-group API (``cache_security_groups``), what VPC
caches show (``vpc_caches``), atomic conditional writes (``atomic_writes``) and
DescribeSecurityGroups paging (``security_group_paging``); one ``install()`` adds them all.

A real HTTP endpoint on this machine that ordinary boto3 clients (the function's own, with
``AWS_ENDPOINT_URL``) and a Lambda container started by ``sam local invoke`` can use::

    with EmbeddedAws(load_scenario(), port=0) as aws:
        aws.endpoint_url              # http://127.0.0.1:<port>
        aws.world.function_environment()
        aws.client("elasticache").describe_cache_security_groups()

moto keeps its state in module globals, so one process holds at most one embedded AWS at a
time, and it must not run while ``mock_aws`` is active in the same process (mock_aws would
intercept the requests meant for the server). Stopping resets moto's state.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any, Final, Self

import boto3
import botocore.session
from botocore.config import Config
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from cache_ingress_tools.emulator import cache_security_groups
from cache_ingress_tools.emulator.scenario import Scenario, SeededWorld, load_scenario, seed

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DUMMY_CREDENTIALS",
    "SERVICES",
    "EmbeddedAws",
    "EmulatorError",
    "client_for",
    "endpoint_url",
]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 5000
SERVICES: Final = ("ec2", "elasticache", "dynamodb", "sqs", "ssm")
# moto accepts any credentials; fixed dummy ones make sure a real key never leaves the machine.
DUMMY_CREDENTIALS: Final = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # nosec B105 - the emulator's dummy keys
_ACCOUNT_VARIABLE: Final = "MOTO_ACCOUNT_ID"
# moto loads some 2,600 sample AMIs into each new EC2 backend (at every reset); nothing here
# uses an AMI, and skipping them makes a start or a reset several times faster.
_AMIS_VARIABLE: Final = "MOTO_EC2_LOAD_DEFAULT_AMIS"
_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 2})
_RESET_PATH: Final = "/moto-api/reset"
_STOP_POLL_SECONDS: Final = 0.05
_REQUEST_TIMEOUT_SECONDS: Final = 10
_NOT_RUNNING: Final = "the embedded AWS is not running; call start() first"
_RUNNING_LOCK = threading.Lock()
_running: list[EmbeddedAws] = []


class EmulatorError(RuntimeError):
    """The embedded AWS could not be started or reached; the message says what to do."""


class _Server(ThreadedMotoServer):
    """ThreadedMotoServer that reports a failed bind instead of waiting for it forever, and
    stops within a twentieth of a second instead of half a second (its serving loop looks
    for a stop request that often; moto's own entry uses werkzeug's default, 0.5 s)."""

    startup_error: BaseException | None = None

    def _server_entry(self) -> None:
        try:
            # As ThreadedMotoServer._server_entry, but for the poll interval.
            app = DomainDispatcherApplication(create_backend_app)
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever(poll_interval=_STOP_POLL_SECONDS)
        except BaseException as exc:
            # werkzeug prints a bind failure and raises SystemExit from the OSError.
            cause = exc.__context__ if isinstance(exc, SystemExit) else None
            self.startup_error = cause if isinstance(cause, OSError) else exc
            self._server_ready_event.set()


class EmbeddedAws:
    """moto on ``host:port`` with the emulation (cache security groups, VPC caches), seeded
    from a scenario.

    ``port=0`` picks a free port (tests, and runs that nobody else needs to reach).
    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        log_requests: bool = False,
    ) -> None:
        self.scenario = scenario if scenario is not None else load_scenario()
        self.host = host
        self.requested_port = port
        self.log_requests = log_requests
        self._server: _Server | None = None
        self._world: SeededWorld | None = None
        self._saved_account: str | None = None
        self._saved_werkzeug_level: int | None = None
        self._saved_amis = False
        self._port: int | None = None

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SeededWorld:
        """Serve, then seed the scenario; returns what seeding created."""
        with _RUNNING_LOCK:
            if _running:
                raise EmulatorError(
                    f"an embedded AWS already runs in this process ({_running[0].endpoint_url}); "
                    "moto keeps one state per process, so use that one"
                )
            _running.append(self)
        try:
            self._serve()
            self._world = seed(self.scenario, self.clients(), client_for=self.client)
        except BaseException:
            self.stop()
            raise
        return self._world

    def stop(self) -> None:
        """Stop serving and reset moto's state (and the settings changed for it)."""
        server, self._server = self._server, None
        try:
            if server is not None and server.startup_error is None:
                self._post_reset()
                server.stop()
        finally:
            self._restore_process_settings()
            self._world = None
            self._port = None
            with _RUNNING_LOCK:
                if self in _running:
                    _running.remove(self)

    def reset(self) -> SeededWorld:
        """Forget everything the run changed and seed the scenario again."""
        self._require_started()
        self._post_reset()
        self._world = seed(self.scenario, self.clients(), client_for=self.client)
        return self._world

    # --- what users of a running embedded AWS need --------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmulatorError(_NOT_RUNNING)
        return self._port

    @property
    def endpoint_url(self) -> str:
        return endpoint_url(self.host, self.port)

    @property
    def world(self) -> SeededWorld:
        if self._world is None:
            raise EmulatorError(_NOT_RUNNING)
        return self._world

    def client(self, service: str) -> Any:
        """A plain boto3 client for this endpoint, in the scenario's region."""
        self._require_started()
        return client_for(self.endpoint_url, self.scenario.region, service)

    def clients(self) -> dict[str, Any]:
        return {service: self.client(service) for service in SERVICES}

    # --- internals ---------------------------------------------------------------------

    def _serve(self) -> None:
        # One install for the cache-security-group API and every gap filled in moto.
        cache_security_groups.install()
        self._use_scenario_account()
        self._skip_default_amis()
        self._quiet_request_log()
        _check_can_listen(self.host, self.requested_port)
        server = _Server(ip_address=self.host, port=self.requested_port, verbose=False)
        server.start()
        if server.startup_error is not None:
            raise EmulatorError(_bind_failure(self.host, self.requested_port, server.startup_error))
        self._server = server
        self._port = int(server.get_host_and_port()[1])

    def _use_scenario_account(self) -> None:
        # moto answers as MOTO_ACCOUNT_ID (default 123456789012) whatever the credentials;
        # the function's own requests cannot say otherwise, so the process must.
        current = os.environ.get(_ACCOUNT_VARIABLE)
        if (current or DEFAULT_ACCOUNT_ID) == self.scenario.account_id:
            return
        self._saved_account = current if current is not None else ""
        os.environ[_ACCOUNT_VARIABLE] = self.scenario.account_id

    def _skip_default_amis(self) -> None:
        if _AMIS_VARIABLE in os.environ:
            return  # the person running it asked for something: leave it
        self._saved_amis = True
        os.environ[_AMIS_VARIABLE] = "false"

    def _quiet_request_log(self) -> None:
        if self.log_requests:
            return
        werkzeug = logging.getLogger("werkzeug")
        self._saved_werkzeug_level = werkzeug.level
        werkzeug.setLevel(logging.WARNING)

    def _restore_process_settings(self) -> None:
        if self._saved_account is not None:
            if self._saved_account:
                os.environ[_ACCOUNT_VARIABLE] = self._saved_account
            else:
                os.environ.pop(_ACCOUNT_VARIABLE, None)
            self._saved_account = None
        if self._saved_amis:
            os.environ.pop(_AMIS_VARIABLE, None)
            self._saved_amis = False
        if self._saved_werkzeug_level is not None:
            logging.getLogger("werkzeug").setLevel(self._saved_werkzeug_level)
            self._saved_werkzeug_level = None

    def _post_reset(self) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own http endpoint
            self.endpoint_url + _RESET_PATH, method="POST", data=b""
        )
        try:
            with urllib.request.urlopen(request, timeout=_REQUEST_TIMEOUT_SECONDS):  # noqa: S310  # nosec B310
                pass
        except (OSError, urllib.error.URLError) as exc:
            raise EmulatorError(
                f"embedded AWS at {self.endpoint_url} did not reset: {exc}"
            ) from exc

    def _require_started(self) -> None:
        if self._server is None:
            raise EmulatorError(_NOT_RUNNING)


def client_for(endpoint_url: str, region: str, service: str) -> Any:
    """An ordinary boto3 client of an embedded AWS, with dummy credentials."""
    return _isolated_session(region).client(  # type: ignore[call-overload]
        service, endpoint_url=endpoint_url, config=_CLIENT_CONFIG
    )


@functools.cache
def _isolated_session(region: str) -> boto3.session.Session:
    # These clients only ever talk to the embedded AWS: nothing from the developer's
    # profile or AWS config files applies (a missing AWS_PROFILE would even fail them).
    botocore_session = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    return boto3.session.Session(
        botocore_session=botocore_session, region_name=region, **DUMMY_CREDENTIALS
    )


def endpoint_url(host: str, port: int) -> str:
    """The URL clients on this machine use; a wildcard listen address means loopback."""
    reachable = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104  # nosec B104
    if ":" in reachable:
        reachable = f"[{reachable}]"
    return f"http://{reachable}:{port}"


def _check_can_listen(host: str, port: int) -> None:
    """Fail with a clear message before the server prints its own and exits."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EmulatorError(_bind_failure(host, port, exc)) from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # The server sets SO_REUSEADDR too, so a socket in TIME_WAIT does not count as in use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise EmulatorError(_bind_failure(host, port, exc)) from exc


def _bind_failure(host: str, port: int, error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {host}:{port}: the port is in use (another emulator? on macOS "
            "the AirPlay Receiver takes port 5000); pass --port with a free port"
        )
    if isinstance(error, OSError) and error.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {host}:{port}: no network interface of this machine has that "
            "address (is Docker running, for its bridge address?)"
        )
    if isinstance(error, socket.gaierror):
        return f"cannot listen on {host}:{port}: unknown host name ({error})"
    return f"cannot listen on {host}:{port}: {error}"
