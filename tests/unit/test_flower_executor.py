"""The site's ClientApp host survives what ends one task: a refused token, a run that stopped, a
heartbeat that says the task is no longer wanted. Flower's own helpers answer those by sending
SIGINT to their process (right for a one-task ``flwr-clientapp``); in the long-lived host that
signal stopped the whole site after a relay restart. Fakes stand in for the SuperNode's Runtime API
(an HTTP server in a real site); the retry invoker, heartbeat sender and exceptions are flwr's."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from flwr.supercore.heartbeat import make_task_heartbeat_fn_http
from flwr.supercore.run import RunNotRunningException

from secure_pcft.runtime.flower import executor


@pytest.fixture()
def sigints(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Record SIGINTs raised in this process instead of letting them interrupt the test."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def _status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:1/x")
    return httpx.HTTPStatusError("refused", request=request, response=httpx.Response(code))


class _HeartbeatClient:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def SendTaskHeartbeat(self, _request: Any) -> Any:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return SimpleNamespace(success=self.outcome)


def test_flwr_heartbeat_signals_its_process_when_the_task_is_unwanted(sigints: list[int]) -> None:
    # The control: why the host cannot use flwr's heartbeat function.
    make_task_heartbeat_fn_http(_HeartbeatClient(False))()  # type: ignore[arg-type]
    assert sigints == [signal.SIGINT]


@pytest.mark.parametrize("outcome", [False, _status_error(401), _status_error(403)])
def test_host_heartbeat_marks_the_task_abandoned_without_a_signal(
    sigints: list[int], outcome: Any
) -> None:
    abandoned = threading.Event()
    assert executor.task_heartbeat(_HeartbeatClient(outcome), abandoned)() is True
    assert abandoned.is_set() and sigints == []


@pytest.mark.parametrize("outcome", [_status_error(503), httpx.ConnectError("refused")])
def test_host_heartbeat_retries_while_the_supernode_is_unreachable(outcome: Any) -> None:
    abandoned = threading.Event()
    assert executor.task_heartbeat(_HeartbeatClient(outcome), abandoned)() is False
    assert not abandoned.is_set()
    assert executor.task_heartbeat(_HeartbeatClient(True), abandoned)() is True
    assert not abandoned.is_set()


def test_retry_invoker_raises_a_refusal_instead_of_signalling(sigints: list[int]) -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise _status_error(401)

    with pytest.raises(httpx.HTTPStatusError):
        executor._retry_invoker(threading.Event()).invoke(refused)
    assert calls == [1] and sigints == []


def test_retry_invoker_retries_an_unreachable_supernode_until_it_answers() -> None:
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise httpx.ConnectError("connection refused")
        return "ok"

    assert executor._retry_invoker(threading.Event()).invoke(flaky) == "ok"
    assert len(tries) == 3


def test_retry_invoker_stops_retrying_once_the_site_stops() -> None:
    stop = threading.Event()
    stop.set()

    def down() -> None:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(httpx.ConnectError):
        executor._retry_invoker(stop).invoke(down)


class _TaskClient:
    """What ``_run_task`` asks of its Runtime API client, beyond the patched pull/push helpers."""

    def __init__(self) -> None:
        self.outputs: list[str] = []
        self.closed = False

    def SendTaskHeartbeat(self, _request: Any) -> Any:
        return SimpleNamespace(success=True)

    def PushTaskOutput(self, request: Any) -> None:
        self.outputs.append(request.sub_status)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("error", [RunNotRunningException(), _status_error(403)])
def test_a_task_whose_run_stopped_is_abandoned_not_raised_through(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    client = _TaskClient()
    monkeypatch.setattr(executor, "_client", lambda *_a, **_k: client)

    def pull(_client: Any) -> Any:
        raise error

    monkeypatch.setattr(executor, "pull_task_input", pull)
    monkeypatch.setattr(executor, "push_task_output",
                        lambda c, _ctx, status, _d: c.PushTaskOutput(SimpleNamespace(sub_status=status)))  # fmt: skip
    with pytest.raises(executor.TaskAbandoned):
        executor._run_task("127.0.0.1:1", "token", threading.Event())
    assert client.outputs == ["failed"] and client.closed  # final status still reported


class _SuperExecClient:
    """Hands out ``tasks`` tasks, then none."""

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.closed = False

    def AcquireTask(self, _request: Any) -> Any:
        if self.tasks == 0:
            return SimpleNamespace(HasField=lambda _name: False, token="")
        self.tasks -= 1
        return SimpleNamespace(HasField=lambda _name: True, token=f"t{self.tasks}")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "failure",
    [
        executor.TaskAbandoned("run no longer running"),
        RuntimeError("No messages received from Runtime API"),  # flwr's own error, outside the app
    ],
)
def test_host_keeps_serving_after_a_task_that_failed(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    stop = threading.Event()
    client = _SuperExecClient(tasks=2)
    ran: list[str] = []

    def run_task(_address: str, token: str, _stop: threading.Event) -> None:
        ran.append(token)
        if len(ran) == 1:
            raise failure
        stop.set()

    monkeypatch.setattr(executor, "_client", lambda *_a, **_k: client)
    monkeypatch.setattr(executor, "_run_task", run_task)
    executor.serve("127.0.0.1:1", stop=stop, poll_s=0.01)
    assert ran == ["t1", "t0"] and client.closed
