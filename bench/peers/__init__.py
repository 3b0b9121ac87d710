"""Other LLM gateways as extra benchmark targets: ``bench.run --peers litellm,portkey``.

Opt-in: neither is a dependency of the project and CI never installs them. Each is installed by
hand, outside the project's virtualenv, by its script beside this module (``setup_litellm.sh``,
``setup_portkey.sh``). :func:`start` runs one on a loopback port in front of the mock upstream,
with what would reach the internet switched off, and :func:`check` makes sure it answers a JSON
and an SSE chat completion with usage before it is measured: a peer that fails fast on every
request would otherwise look very quick.

- **LiteLLM proxy** (``var/peers/litellm``): a generated config maps ``gpt-4o-mini`` to
  ``openai/gpt-4o-mini`` on the mock with a dummy key; a master key made for the run (it refuses
  to start without one) is the client's bearer token, as a VK is the gateway's; no database; the
  model cost map and the other files it would fetch (blog posts, beta headers, policy templates,
  router presets) are read from the package. As many workers as the gateway has, under gunicorn
  (``--run_gunicorn``): uvicorn's own supervisor spawns workers that import LiteLLM anew, which
  on a busy 2-core machine outlasts its health check, and it restarted them every few seconds.
- **Portkey gateway** (``var/peers/portkey``): ``node build/start-server.js --port=N --headless``
  with ``loopback.cjs`` preloaded, since its server would listen on every interface; one process,
  as its command line starts it. Each request names the provider and the mock in headers.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LITELLM = ROOT / "var/peers/litellm/bin/litellm"
PORTKEY = ROOT / "var/peers/portkey/node_modules/@portkey-ai/gateway/build/start-server.js"
INSTALLED = {"litellm": LITELLM, "portkey": PORTKEY}
INSTALL = {"litellm": "sh bench/peers/setup_litellm.sh", "portkey": "sh bench/peers/setup_portkey.sh"}
MODEL = "gpt-4o-mini"

# The LITELLM_LOCAL_* files are fetched from the internet at start-up unless LiteLLM is told to
# use its bundled copies; no model hub downloads, no admin UI, only errors in its log.
LITELLM_OFFLINE = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "HF_HUB_OFFLINE": "1",
    "DISABLE_ADMIN_UI": "True",
    "LITELLM_LOG": "ERROR",
}

LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: http://{host}:{mock_port}/v1
      api_key: sk-bench-dummy
litellm_settings:
  drop_params: true
  set_verbose: false
general_settings:
  disable_spend_logs: true
"""


@dataclass
class Peer:
    name: str
    proc: subprocess.Popen
    port: int
    headers: dict[str, str]
    workdir: Path  # the generated config and the peer's log


def parse(spec: str) -> list[str]:
    """The peers ``--peers`` names; exits with the install command of one that is missing."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        if name not in INSTALLED:
            raise SystemExit(f"unknown peer {name!r}: the peers are {', '.join(INSTALLED)}")
        if not INSTALLED[name].exists():
            raise SystemExit(
                f"peer {name} is not installed ({INSTALLED[name]} is missing); install it with: {INSTALL[name]}"
            )
    return names


def _clean_env() -> dict[str, str]:
    # Nothing of the gateway's environment (database, Redis, provider keys) reaches a peer.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


def _command(name: str, port: int, mock_port: int, workdir: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(command, environment, request headers) of one peer."""
    if name == "litellm":
        config = workdir / "litellm.yaml"
        config.write_text(LITELLM_CONFIG.format(model=MODEL, host=HOST, mock_port=mock_port))
        workers = os.environ.get("GUNICORN_WORKERS") or str(multiprocessing.cpu_count())
        cmd = [str(LITELLM), "--config", str(config), "--port", str(port), "--host", HOST]
        cmd += ["--num_workers", workers, "--run_gunicorn"]
        master_key = f"sk-{secrets.token_hex(32)}"
        env = {**_clean_env(), **LITELLM_OFFLINE, "LITELLM_MASTER_KEY": master_key}
        return cmd, env, {"Authorization": f"Bearer {master_key}"}
    cmd = ["node", "--require", str(HERE / "loopback.cjs"), str(PORTKEY), f"--port={port}", "--headless"]
    headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://{HOST}:{mock_port}/v1",
        "Authorization": "Bearer dummy",
    }
    return cmd, {**_clean_env(), "NODE_ENV": "production"}, headers


def start(name: str, port: int, mock_port: int, *, timeout: float = 300.0) -> Peer:
    """Start a peer on ``HOST:port`` in front of the mock; returns once it accepts connections."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-peer-{name}-"))
    cmd, env, headers = _command(name, port, mock_port, workdir)
    with open(workdir / "log", "wb") as log:
        # Its own process group: stop() ends the peer's workers with it, and nothing else.
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=log, start_new_session=True)
    peer = Peer(name, proc, port, headers, workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log_tail = (workdir / "log").read_text(errors="replace")[-2000:]
            stop(peer)
            raise SystemExit(f"peer {name} exited with {proc.returncode}:\n{log_tail}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
        except OSError:
            time.sleep(0.2)
            continue
        if _settled(proc, deadline):
            return peer
        break
    stop(peer)
    raise SystemExit(f"peer {name} did not listen on {HOST}:{port} and settle within {timeout:.0f} s")


def _settled(proc: subprocess.Popen, deadline: float) -> bool:
    """Waits until the peer's processes are idle: the port answers as soon as the first of several
    workers listens, and a worker still importing would be measured as request CPU."""
    from bench.run import cpu_seconds  # bench.run imports this module

    while time.monotonic() < deadline:
        before = cpu_seconds(proc)
        time.sleep(1.0)
        if cpu_seconds(proc) - before < 0.05:
            return True
    return False


def stop(peer: Peer) -> None:
    if peer.proc.poll() is None:
        os.killpg(peer.proc.pid, signal.SIGTERM)
        try:
            peer.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(peer.proc.pid, signal.SIGKILL)
            peer.proc.wait()
    shutil.rmtree(peer.workdir, ignore_errors=True)


def _post(port: int, headers: dict[str, str], payload: dict) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(payload), {**headers, "Content-Type": "application/json"}
        )
        answer = conn.getresponse()
        return answer.status, answer.getheader("content-type", ""), answer.read()
    finally:
        conn.close()


def check(port: int, headers: dict[str, str]) -> str:
    """A JSON and an SSE chat completion through ``port``: both must be 200 and carry usage.
    Returns what was seen; exits naming what is wrong."""
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
    }
    status, _, data = _post(port, headers, request)
    usage = json.loads(data).get("usage") if status == 200 else None
    if not usage or not usage.get("prompt_tokens") or usage.get("completion_tokens") != 16:
        raise SystemExit(f"port {port}: JSON answer {status} without the expected usage: {data[:300]!r}")
    stream = {**request, "stream": True, "stream_options": {"include_usage": True}}
    status, content_type, data = _post(port, headers, stream)
    events = [line[6:] for line in data.decode(errors="replace").splitlines() if line.startswith("data: ")]
    chunks = [json.loads(event) for event in events if event != "[DONE]"]
    stream_usage = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
    if status != 200 or "text/event-stream" not in content_type or events[-1:] != ["[DONE]"] or not stream_usage:
        raise SystemExit(f"port {port}: SSE answer {status} {content_type!r} without usage or [DONE]: {data[:300]!r}")
    last = stream_usage[-1]
    return (
        f"JSON 200 usage {usage['prompt_tokens']}+{usage['completion_tokens']}; SSE 200, {len(chunks)} chunks, "
        f"usage {last['prompt_tokens']}+{last['completion_tokens']}, [DONE]"
    )
