"""Graceful shutdown of the real server process: SIGTERM while one request is being scored and another is
queued behind it; both still get their 200 and their own scores, and the process exits cleanly."""

import signal
import threading
import time

import httpx

from serve_helpers import ServerProcess, echo_request


def test_sigterm_finishes_requests_in_flight(tmp_path):
    mark = tmp_path / "scoring"
    server = ServerProcess(["--model", "python:serve_helpers:slow", "--max-delay-ms", "1"], tmp_path / "server.log",
                           env={"SLOW_SCORER_MARK": str(mark)})
    answers = {}

    def call(i):
        answers[i] = httpx.post(f"{server.url}/score", json=echo_request(i)[0], timeout=30)

    try:
        first = threading.Thread(target=call, args=(1,))
        first.start()
        deadline = time.monotonic() + 20
        while not mark.exists():  # request 1 is inside the (1.5 s) scorer call
            assert time.monotonic() < deadline and first.is_alive()
            time.sleep(0.01)
        second = threading.Thread(target=call, args=(2,))
        second.start()
        while "rewardkit_queue_depth 1.0" not in httpx.get(f"{server.url}/metrics").text:  # request 2 waits
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.terminate()
        first.join(30)
        second.join(30)
        server.proc.wait(30)
    finally:
        code = server.stop()
    for i in (1, 2):
        assert answers[i].status_code == 200, answers[i].text
        assert answers[i].json()["rewards"] == echo_request(i)[1]
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert "Finished server process" in server.log()
    assert '"path": "/score", "status": 200' in server.log()
