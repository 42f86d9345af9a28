"""The benchmarks: scripts run as `.venv/bin/python bench/<script>.py` (or through `make`), each writing a JSON
results file under bench/results/.

Commands:
- suite.py        `make bench`: the gateway next to three baselines; scenarios in scenarios/
- concurrency.py  `make bench-concurrency`: reserved concurrency, throttling, provisioned first invokes;
                  the measurements in concurrency_scenarios.py
- profile.py      `make profile`: where the gateway's time goes under load (py-spy)
- soak.py         `make soak`: the gateway's footprint under churn and long runs
- loadgen.py      the load generator (closed and open loop), a library and a CLI; its parts in load/
- report.py       BENCHMARKS.md's results section from a suite results file (report_sections.py,
                  report_paths.py, report_format.py); plots.py draws its charts

Shared: harness.py (servers in their own sessions, CPU from /proc, a blocking raw HTTP client, wrk) and
baselines/ (the servers the gateway is compared with).
"""
