"""A BLS caller of llm_engine dies mid-stream: does the engine wedge, and does its watchdog
(config parameter `stuck_send_exit_s`, python_backends/llm/engine.Outbox) bring it back?

    .venv/bin/python -m modelrepo.perf.studies.engine_stuck_send [--rounds 2] [--stuck-s 10]

Each round, for `stuck_send_exit_s` = --stuck-s and = 0 (never): a server of its own with the four LLM
models (a temporary copy of the repository, llm_engine's parameter set through its config), three
llm_bls streams of 400 tokens, SIGKILL of llm_bls's stub 4 s in; then, for --observe-s, what
`modelrepo serve` does every 0.5 s (`recovery.heal`: reload every model whose stub died). Then one new
llm_bls stream of 16 tokens, given --probe-s to finish. Recorded: which stubs died and when (seconds
after the kill), and whether the new stream was answered.
Writes perf/results/engine_stuck_send.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from modelrepo.perf.chaos import copy_models, small_server
from modelrepo.perf.results import record
from modelrepo.triton.llm_client import grpc_stream, llm_inputs
from modelrepo.triton.model_config import read_config, write_config
from modelrepo.triton.recovery import StubWatch, heal, stub_processes

LLM_MODELS = ("llm_bls", "llm_engine", "llm_preprocessing", "llm_postprocessing")
STREAMS = 3


def streaming(prompt: str, tokens: int) -> dict[str, np.ndarray]:
    return {**llm_inputs(prompt, tokens), "stream": np.array([[True]])}


def in_background(url: str, inputs: dict[str, np.ndarray], timeout_s: float, into: dict, key) -> threading.Thread:
    """A stream on a daemon thread: a wedged server must not hold the study (the client waits for ever)."""
    def run():
        started = time.monotonic()
        try:
            result = grpc_stream(url, "llm_bls", inputs, timeout_s=timeout_s)
            into[key] = {"chunks": len(result.chunks), "error": result.error, "seconds": round(time.monotonic() - started, 1)}
        except Exception as err:  # queue.Empty: nothing arrived within timeout_s
            into[key] = {"chunks": 0, "error": f"no response in {timeout_s:g} s ({type(err).__name__})", "seconds": None}

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def one_round(workdir: Path, stuck_s: int, observe_s: float, probe_s: float) -> dict:
    repository = copy_models(LLM_MODELS, workdir / "repository")
    config = read_config(repository / "llm_engine")
    config.parameters["stuck_send_exit_s"].string_value = str(stuck_s)
    write_config(repository / "llm_engine", config)
    server = small_server(repository, LLM_MODELS, workdir / "triton.log")
    figures: dict = {"stuck_send_exit_s": stuck_s, "died": [], "reloaded": []}
    with server:
        watch = StubWatch(server.process.pid)
        watch.poll()
        streams: dict = {}
        for n in range(STREAMS):
            in_background(server.grpc_url, streaming("Tell me a long story about tea.", 400), 120, streams, n)
        time.sleep(4)
        caller = next(s for s in stub_processes(server.process.pid) if s.model == "llm_bls")
        os.kill(caller.pid, signal.SIGKILL)
        killed = time.monotonic()
        poll = watch.poll

        def poll_and_note() -> list:  # heal's view of the dead stubs, timed
            dead = poll()
            figures["died"] += [{"model": stub.model, "after_s": round(time.monotonic() - killed, 1)} for stub in dead]
            return dead

        watch.poll = poll_and_note
        while time.monotonic() - killed < observe_s:
            for model in heal(server, watch, log=lambda line: None):
                figures["reloaded"].append({"model": model, "after_s": round(time.monotonic() - killed, 1)})
            time.sleep(0.5)
        probe: dict = {}
        in_background(server.grpc_url, streaming("Say hi.", 16), probe_s, probe, "probe").join(probe_s + 5)
        # the client never returns from a stream the server never ends: no result is no answer
        figures["probe"] = probe.get("probe", {"chunks": 0, "error": f"no answer in {probe_s:g} s", "seconds": None})
        figures["streams_killed"] = streams
    return figures


def timed(events: list[dict]) -> str:
    return ", ".join(f"{e['model']} {e['after_s']}" for e in events) or "-"


def row(r: dict) -> str:
    probe = r["probe"]
    outcome = f"answered, {probe['chunks']} chunks in {probe['seconds']} s" if probe["chunks"] and not probe["error"] else probe["error"]
    return f"| {r['round']} | {r['stuck_send_exit_s'] or '0 (never)'} | {timed(r['died'])} | {timed(r['reloaded'])} | {outcome} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stuck-s", type=int, default=10, help="stuck_send_exit_s for the watched variant")
    parser.add_argument("--observe-s", type=float, default=30.0)
    parser.add_argument("--probe-s", type=float, default=30.0)
    args = parser.parse_args()
    rounds = []
    for round_number in range(1, args.rounds + 1):
        for stuck_s in (args.stuck_s, 0):
            with tempfile.TemporaryDirectory(prefix="engine-stuck-") as folder:
                figures = {"round": round_number, **one_round(Path(folder), stuck_s, args.observe_s, args.probe_s)}
            print(figures, flush=True)
            rounds.append(figures)
    command = (f"python -m modelrepo.perf.studies.engine_stuck_send --rounds {args.rounds} --stuck-s {args.stuck_s} "
               f"--observe-s {args.observe_s:g} --probe-s {args.probe_s:g}")
    body = [
        f"llm_bls's stub killed (SIGKILL) 4 s into {STREAMS} streams of 400 tokens; then, for {args.observe_s:g} s, "
        "the reloads `modelrepo serve` makes (every model whose stub died); then one new llm_bls stream of 16 tokens.",
        "",
        "| round | stuck_send_exit_s | stubs that died (s after the kill) | reloaded (s after the kill) | new stream afterwards |",
        "| --- | --- | --- | --- | --- |",
        *[row(r) for r in rounds],
    ]
    print(record("engine_stuck_send", "A BLS caller of llm_engine killed mid-stream: the engine's stuck-send watchdog",
                 command, {"rounds": rounds}, body))


if __name__ == "__main__":
    main()
