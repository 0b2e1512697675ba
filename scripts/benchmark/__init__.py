"""Benchmark the SDK against raw httpx (and, optionally, the published 1.0.0 client) on a loopback server.

Usage:
    python scripts/bench.py                       # full run, several minutes
    python scripts/bench.py --quick               # smoke check, under a minute (CI)
    python scripts/bench.py --published           # also the PyPI cms-python-client==1.0.0, in its own venv
    python scripts/bench.py --json bench.json     # also write the medians, ratios and goals as JSON
    python scripts/bench.py --rounds 11           # more rounds (each contender's median is over the rounds)
    python scripts/bench.py --in-flight 8,32,64   # also the SDK with other in-flight limits (to choose its own)
    python scripts/bench.py --analytics           # also Segment's and PostHog's Python SDKs, in their own venv

A canned-response HTTP/1.1 server (keep-alive, Content-Length) runs in a subprocess on 127.0.0.1; paths under
`/published` get the 1.0.0 client's 200 shape `{"status": true, "data": "..."}`, all others the SDK's. Paths under
`/latency` (e.g. `/latency/track/lead`, `/latency/published/...`) get the same replies `API_LATENCY_MS` (20 ms)
late, the server staying concurrent (a timer per reply), as a real API's round trip would make them.
Each round runs every contender once, in alternating order, so drift (CPU frequency, other load) hits all alike.
The scenarios, one module each under scripts/benchmark/ (its docstring says what and how it measures):

- clients: `CMSClient.track_lead` vs `httpx.Client.post`, µs/call; `AsyncCMSClient.track_lead` vs a default
  `httpx.AsyncClient` (with and without sniffio) at concurrency 32 and 128, replies at once (1,000 leads a run)
  and 20 ms late (640 leads), events/s; with `--in-flight`, the SDK with other in-flight limits
- published (`--published`): the 1.0.0 client's sequential events/s, from a throwaway virtualenv
- enqueue: `Outbox.track_lead` on the caller's thread, µs per call (median, p99), "process" (also from a
  coroutine, and while its thread delivers flat out), "power" and ":memory:"; analytics (`--analytics`):
  Segment's `track()` and PostHog's `capture()` in the same rounds
- delivery: an `Outbox` with `rate_limit=None` delivering 1,000 stored events, events/s, against sequential
  `CMSClient.track_lead` calls/s
- backfill: `import_events` on a generated CSV of 1,000,000 rows (20,000 with --quick), once per run
- imports: fresh interpreters, after the rounds: `from cms_python import CMSClient` timed after `import httpx`
  in the interpreter; `-X importtime` and wall time of `import httpx` / `cms_python`
- postgres: the PostgreSQL outbox on a throwaway server: enqueue, `within(connection).track_sale` against the
  app's own INSERT in its transaction, and delivery by 1 and by 3 processes; skipped, with a line saying so,
  without PostgreSQL's server binaries

Drivers run in fresh interpreters are plain scripts under scripts/benchmark/drivers/.

Exit status: 0 when every goal passes (always, with --quick, unless the bench itself breaks), 1 otherwise.
"""
