"""``aijobs run`` (what ``make run`` starts): the printed example works, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from PIL import Image

from aijobs.embedded_redis import free_port

ROOT = Path(__file__).resolve().parent.parent


def read_banner(process: subprocess.Popen[str], timeout_s: float = 60) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            return "".join(lines)
    raise AssertionError(f"no banner; output so far:\n{''.join(lines)}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed example is a curl command")
def test_run_prints_a_working_example_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIJOBS_") and k != "REDIS_URL"}
    command = [
        sys.executable,
        "-m",
        "aijobs",
        "run",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            banner = read_banner(process)
            redis_port = re.search(r"Redis: redis://127\.0\.0\.1:(\d+)", banner)
            assert redis_port, banner
            exercise(banner, port)
        finally:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            code = process.wait(timeout=60)
    assert code == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # no process of the group is left
    assert not port_open(port)
    assert not port_open(int(redis_port.group(1)))


def exercise(banner: str, port: int) -> None:
    key = re.search(r"dev key\s+(aj_\S+)", banner)
    assert key, banner
    # The copy-paste example, run as printed (with the exported key).
    example = banner[banner.index("export AIJOBS_KEY") : banner.index("curl -s", banner.index("-d '"))]
    submitted = subprocess.run(
        ["bash", "-c", example], capture_output=True, text=True, timeout=30, check=True
    )
    job_id = re.search(r'"id":"(job_\w+)"', submitted.stdout)
    assert job_id, submitted.stdout
    # The one-step example too, as printed: it waits and exits 0 once the job succeeded.
    one_step = banner[banner.index(".venv/bin/aijobs submit") : banner.index("Ctrl-C")]
    script = f"export AIJOBS_KEY={key.group(1)}\n{one_step}"
    waited = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert waited.returncode == 0, waited.stderr
    assert '"status": "succeeded"' in waited.stdout
    headers = {"Authorization": f"Bearer {key.group(1)}"}
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as http:
        job = wait(http, job_id.group(1))
        assert job["output"] == {
            "message": {"role": "assistant", "content": "Simulated reply to: Hello!"},
            "finish_reason": "stop",
        }
        image_job = http.post(
            "/v1/jobs", json={"type": "image", "input": {"prompt": "x", "size": "96x64"}}
        ).json()
        blob = wait(http, image_job["id"])["output"]["images"][0]  # type: ignore[index]
        assert blob["url"].startswith(f"http://127.0.0.1:{port}/v1/blobs/")
        picture = Image.open(io.BytesIO(httpx2.get(blob["url"]).content))
        assert picture.size == (96, 64)
        tampered = blob["url"].replace("sig=", "sig=0")
        assert httpx2.get(tampered).status_code == 404


def wait(http: httpx2.Client, job_id: str, timeout_s: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, object] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "succeeded":
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.1)
    raise AssertionError(f"{job_id} did not finish")
