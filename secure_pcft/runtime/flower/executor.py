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
from collections.abc import Callable
from typing import Any

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import MAX_RETRY_DELAY, ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.protobuf.client import ProtobufClientInterceptor
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.run import RunNotRunningException
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from secure_pcft.errors import ConfigError
from secure_pcft.runtime.flower.site import SiteSpec, site_for

log = logging.getLogger(__name__)


_RETRYABLE_STATUS = frozenset({httpx.codes.BAD_GATEWAY, httpx.codes.SERVICE_UNAVAILABLE,
                               httpx.codes.GATEWAY_TIMEOUT})  # fmt: skip


class TaskAbandoned(Exception):
    """The SuperNode no longer wants this task's result (its run ended, or the token expired)."""


def _retry_invoker(stop: threading.Event) -> RetryInvoker:
    """Retry a Runtime API call while the SuperNode is unreachable; give up on a refusal.

    flwr's own invoker (``make_simple_http_retry_invoker``) was written for a one-task
    ``flwr-clientapp`` process: on a 401 it sends SIGINT to its own process. In this long-lived
    host that signal is the site's stop signal, and a stopping site no longer restarts its
    SuperNode (seen once in the faults test after a relay restart: a site stopped itself and its
    peer missed the rest of the run). Here a refusal raises to the task, which is abandoned; the
    host keeps serving. Retrying stops when ``stop`` is set. While the SuperNode is down a call
    waits for the site's supervisor to restart it; the new SuperNode refuses the old task's token.
    """

    def should_giveup(exc: Exception) -> bool:
        if stop.is_set():
            return True
        if isinstance(exc, httpx.HTTPStatusError):
            return exc.response.status_code not in _RETRYABLE_STATUS
        return False

    def wait(seconds: float) -> None:
        stop.wait(seconds)  # a stopping site does not sit out a back-off

    return RetryInvoker(
        wait_gen_factory=lambda: exponential(max_delay=MAX_RETRY_DELAY),
        recoverable_exceptions=(httpx.TransportError, httpx.HTTPStatusError),
        max_tries=None,
        max_time=None,
        should_giveup=should_giveup,
        wait_function=wait,
    )


def _client(
    address: str, component: str, stop: threading.Event, token: str | None = None
) -> RuntimeHttpClient:
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
        retry_invoker=_retry_invoker(stop),
    )


def task_heartbeat(client: Any, abandoned: threading.Event) -> Callable[[], bool]:
    """A task heartbeat that reports an unwanted task through ``abandoned``, never by a signal.

    Flower's ``make_task_heartbeat_fn_http`` raises SIGINT in its own process when the SuperNode
    answers that the task is no longer wanted — right for a one-task process, fatal for a host that
    serves every task of the site. Returns False (heartbeat retried later) while the SuperNode is
    unreachable.
    """
    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            res = client.SendTaskHeartbeat(request)
        except httpx.TransportError:
            return False
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in _RETRYABLE_STATUS:
                return False
            abandoned.set()
            return True
        if not res.success:
            abandoned.set()
        return True

    return beat


def _run_task(address: str, token: str, stop: threading.Event) -> None:
    """Pull one ClientApp task, run it in this process, push the reply and the final status.

    Raises:
        TaskAbandoned: the SuperNode refused the task's input or output (its run is no longer
            running, e.g. after a relay restart). The peer's durable state is the site's, saved
            at round boundaries, so nothing of the peer is lost with the task.
    """
    from secure_pcft.runtime.flower.client_app import app

    client = _client(address, "flwr-clientapp", stop, token)
    abandoned = threading.Event()
    heartbeat = HeartbeatSender(task_heartbeat(client, abandoned))
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
        if abandoned.is_set():
            raise TaskAbandoned("the SuperNode stopped the task while it ran")
        push_message(client, reply, context)
    except (RunNotRunningException, httpx.HTTPError) as exc:  # flwr's "run ended": a BaseException
        raise TaskAbandoned(f"{type(exc).__name__}: {exc}") from None
    finally:
        push_task_output(client, context, status, details)  # logs its own HTTP errors
        heartbeat.stop()
        client.close()


def serve(address: str = "127.0.0.1:9094", stop: threading.Event | None = None,
          poll_s: float = 0.1, warm: SiteSpec | None = None) -> None:  # fmt: skip
    """Serve ClientApp tasks of the SuperNode whose Runtime API is at ``address`` until ``stop``.

    ``warm``: build this site's peer before serving, so the relay's first step is answered fast
    (it must be the site the SuperNode's ``--node-config`` names). A task that fails outside the
    ClientApp (the SuperNode restarted, its run ended) is logged and dropped; the host goes on.

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
    client = _client(address, "SuperExec", stop)
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
                try:
                    _run_task(address, res.token, stop)
                except TaskAbandoned as exc:
                    log.warning("task abandoned after %.2f s: %s", time.perf_counter() - t0, exc)
                    continue
                except Exception:  # a malformed task must not take the site down with it
                    log.exception("task failed outside the ClientApp; serving on")
                    continue
                log.info("task done in %.2f s", time.perf_counter() - t0)
            else:
                stop.wait(poll_s)
    finally:
        client.close()
