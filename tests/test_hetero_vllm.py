"""hpu_shim.testing.hetero_vllm (``make hetero``): the verdict it prints and exits with.

The run itself is heavy (three vLLM instances, a ~390 MB model, a 4K-token prompt): ``make hetero``,
not ``make test``. Here: what counts as success -- the decode instance's first request hit what the
prefill instance stored, its greedy output is the cold baseline's, and no vLLM process survived."""

from __future__ import annotations

import copy

from hpu_shim.testing import hetero_vllm as hv


def request(cached: int, output: list, ttft: float) -> dict:
    return {"num_cached_tokens": cached, "output": output, "ttft_s": ttft, "seconds": ttft + 1,
            "prompt_tokens": 4097}


GOOD = {"model": "m", "prompt_tokens": 4096, "max_tokens": 4, "server": "lm://127.0.0.1:1", "survivors": [],
        "prefill": {"requests": [request(0, [1, 2, 3, 4], 12.0), request(3840, [1, 2, 3, 4], 2.0)]},
        "decode": {"requests": [request(3840, [1, 2, 3, 4], 1.5)]},
        "baseline": {"requests": [request(0, [1, 2, 3, 4], 12.0)]}}


def bad(path: tuple, value) -> dict:
    report = copy.deepcopy(GOOD)
    node = report
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return report


def test_success_and_the_figure():
    assert hv.verdict(GOOD) == []
    text = hv.render(GOOD)
    assert "decode first-request TTFT 1.50 s vs cold 12.00 s: 8.0x faster; output identical: True" in text
    assert text.endswith("hetero: OK")


def test_each_failure_is_named():
    cases = [
        (("decode", "requests", 0, "num_cached_tokens"), 0, "did not hit what the prefill instance stored"),
        (("decode", "requests", 0, "output"), [9, 9, 9, 9], "outputs differ"),
        (("prefill", "requests", 1, "num_cached_tokens"), 0, "did not hit the server"),
        (("baseline", "requests", 0, "num_cached_tokens"), 5, "baseline had cached tokens"),
        (("survivors",), [1234], "outlived their run"),
    ]
    for path, value, needle in cases:
        failures = hv.verdict(bad(path, value))
        assert len(failures) == 1 and needle in failures[0], (path, failures)
        assert "hetero: FAILED" in hv.render(bad(path, value))


def test_an_instance_error_is_the_verdict():
    report = bad(("decode",), {"error": "RuntimeError: boom"})
    assert hv.verdict(report) == ["decode: RuntimeError: boom"]
    assert "decode   ERROR RuntimeError: boom" in hv.render(report)
