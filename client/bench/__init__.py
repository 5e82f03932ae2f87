"""The benchmarks: one module per job.

- `python -m client.bench` (serving.py): closed-loop streams per concurrency level against a server, the open
  loop (openloop.py), beside baselines in this process (baselines.py, genai_cb.py, raw_step.py), taking turns
  with them in rounds (rounds.py, shared with variants.py); figures from load.py, tables and the summary line
  from report.py and targets.py, the plot from plot.py, the server's RSS from rss.py.
- `python -m client.bench.memory` (memory.py): the server's resident memory per model precision.
"""
