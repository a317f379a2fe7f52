"""Watching the measurement live: optuna-dashboard's own WSGI app, served on 127.0.0.1 over the storage a worker
writes, shows the measured table with what a user looks for (arch, MACs, predicted latency, top-1)."""

from __future__ import annotations

import json
import platform
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna_dashboard
from test_search_table import run  # noqa: F401  (the module's run directory)

import ofa
from ofa.latency import LatencyTable, distinct_units
from search.budgets import latency_attrs
from search.table import STUDY_NAME, measure_table, open_storage


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_dashboard_serves_the_measured_table_with_arch_macs_latency_and_top1(run, tmp_path):  # noqa: F811
    from ofa.data import load_run_data

    net = ofa.load(run / "supernet.safetensors")
    units = sorted(distinct_units(net))
    # a table of this supernet whose units take different times, so that subnets' latencies differ
    table = LatencyTable("board", {k: 0.01 * (1 + i % 7) for i, k in enumerate(units)},
                         meta={"host": platform.node(), "threads": 1})
    lut = table.save(tmp_path / "board.json")
    storage = f"sqlite:///{tmp_path / 'live.db'}"
    measure_table(net, load_run_data(run), storage, 3, calib_batches=1, batch_size=48, val_limit=48,
                  progress=False, attrs=latency_attrs(net, None, {"board": str(lut)}))

    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(open_storage(storage, None, None)),
                         handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def get(path: str):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}", timeout=30) as r:
                return json.load(r)

        (summary,) = get("/api/studies")["study_summaries"]
        assert summary["study_name"] == STUDY_NAME
        assert {"key": "supernet", "value": net.name} in summary["user_attrs"]
        study = get(f"/api/studies/{summary['study_id']}")
    finally:
        server.shutdown()
        thread.join()
    assert study["name"] == STUDY_NAME and len(study["trials"]) == 3
    assert study["objective_names"] == ["val_top1"]  # the value's label, instead of "Objective 0"
    latencies = set()
    for trial in study["trials"]:
        assert trial["state"] == "Complete"
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}  # the dashboard shows them as text
        arch = net.space.arch_from_json(attrs["arch"])
        assert int(attrs["macs"]) == net.costs(arch)[0]
        assert float(attrs["top1"]) == trial["values"][0]
        assert float(attrs["latency_ms@board"]) == round(table.predict(net, arch), 4)
        latencies.add(attrs["latency_ms@board"])
    assert len(latencies) == 3  # per subnet, not one number for all
