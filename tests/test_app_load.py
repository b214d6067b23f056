"""The app under load: 8 clients send 25 requests each, all at once, over HTTP. No request fails.

The latencies are printed (pytest -s shows them), not asserted: they depend on the machine. The
timed targets live in benchmarks/app_latency.py, which uses the same client code at 300 px.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import live_app, make_models

from skinlesion.acquire.demo_data import render_demo_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from app_latency import concurrent_ms  # noqa: E402

CLIENTS, REQUESTS = 8, 25


@pytest.mark.slow
def test_eight_clients_twenty_five_requests_each_without_an_error(tmp_path):
    make_models(tmp_path / "models")
    image = tmp_path / "lesion.jpg"
    render_demo_image("bkl", seed=5, image_size=(600, 450))[0].save(image, quality=92)
    with live_app(tmp_path / "models", tmp_path / "examples") as url:
        latencies, errors, wall = concurrent_ms(url, image, CLIENTS, REQUESTS)
    assert errors == 0
    assert len(latencies) == CLIENTS * REQUESTS
    p50, p95 = np.percentile(latencies, [50, 95])
    print(f"\n{CLIENTS} clients x {REQUESTS} requests: p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
          f"{len(latencies) / wall:.1f} requests/s")
