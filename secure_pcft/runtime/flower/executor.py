"""A long-lived ClientApp host for a SuperNode started with ``--isolation process``.

Flower normally starts a fresh ``flwr-clientapp`` process for every message (through
``flower-superexec``), which would re-import torch, reload the base model and rebuild the peer
for each of the ~5 steps of every round. In ``process`` isolation the SuperNode leaves running
ClientApps to an outside process instead; this is ours. It polls the SuperNode's Runtime API
(loopback only) for ClientApp tasks and runs secure-pcft's own :data:`.client_app.app` in-process,
so a peer stays in memory between steps and rounds (its durable state is still saved at every
round boundary, so a restart resumes).

A site therefore never runs code that arrives over the network: the FAB that ``flwr run`` ships
with a run is ignored, and only the installed ``secure_pcft`` package answers (TM-04: a
compromised coordinator cannot push code to the sites).

This uses the Runtime API client of flwr 1.42 (pinned by the ``flower`` extra).
"""

from __future__ import annotations

import logging
import threading
import time

from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.protobuf.client import ProtobufClientInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from secure_pcft.errors import ConfigError
from secure_pcft.runtime.flower.site import SiteSpec, site_for

log = logging.getLogger(__name__)


def _client(address: str, component: str, token: str | None = None) -> RuntimeHttpClient:
    interceptors: list[ProtobufClientInterceptor] = [
        RuntimeVersionHttpInterceptor(component_name=component)
    ]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,  # the Runtime API listens on the site's own loopback interface only
        root_certificates=None,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )


def _run_task(address: str, token: str) -> None:
    """Pull one ClientApp task, run it in this process, push the reply and the final status."""
    from secure_pcft.runtime.flower.client_app import app

    client = _client(address, "flwr-clientapp", token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, _run, _fab = pull_task_input(client)
        try:
            reply = app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # the relay sees an error reply; the host keeps serving
            log.exception("ClientApp raised")
            reason = f"{type(exc).__name__}: {exc}"
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                            reply_to=message)  # fmt: skip
        push_message(client, reply, context)
    finally:
        push_task_output(client, context, status, details)
        heartbeat.stop()
        client.close()


def serve(address: str = "127.0.0.1:9094", stop: threading.Event | None = None,
          poll_s: float = 0.1, warm: SiteSpec | None = None) -> None:  # fmt: skip
    """Serve ClientApp tasks of the SuperNode whose Runtime API is at ``address`` until ``stop``.

    ``warm``: build this site's peer before serving, so the relay's first step is answered fast
    (it must be the site the SuperNode's ``--node-config`` names).

    Raises:
        ConfigError: ``address`` is not a loopback address (the Runtime API is unauthenticated
            here and must never leave the site's machine).
    """
    host = address.rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"executor: Runtime API address {address!r} must be on loopback")
    stop = stop or threading.Event()
    from secure_pcft.runtime.flower import client_app  # noqa: F401  (import torch etc. now)

    if warm is not None:
        site_for(warm)
    client = _client(address, "SuperExec")
    log.info("secure-pcft ClientApp host serving the SuperNode at %s", address)
    try:
        while not stop.is_set():
            try:
                res = client.AcquireTask(
                    AcquireTaskRequest(
                        supported_task_types=[str(TaskType.CLIENT_APP)], agentapp_fab_hashes=[]
                    )
                )
            except Exception as exc:  # SuperNode restarting: wait and retry
                log.debug("AcquireTask failed: %s", exc)
                stop.wait(1.0)
                continue
            if res.HasField("task") and res.token:
                t0 = time.perf_counter()
                _run_task(address, res.token)
                log.info("task done in %.2f s", time.perf_counter() - t0)
            else:
                stop.wait(poll_s)
    finally:
        client.close()
