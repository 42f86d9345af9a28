"""The load generator's parts; bench/loadgen.py is its public face (the names to import) and its CLI.

- request.py    what is sent, and where: pre-encoded requests, Zipf choices, the loopback check
- client.py     one raw asyncio connection per keep-alive socket, the response parser, outcomes
- run.py        one run's state and lifecycle: clock, warm-up, timeouts, reconnects, progress, result
- loops.py      the load models: closed loop and open loop (coordinated omission corrected)
- histogram.py  the HDR-style latency histogram
- result.py     `LoadResult`, what a run measured, and its JSON form
"""
