"""The kernel: what every layer above uses and that knows no MEC role:
errors, states, input validation, safe YAML, the store and its views,
paging and filters, events, locks, workers, the op journal, logs, the
configuration schema (its vocabulary in `schema`, which drivers declare
their sections with; `config` composes the core's rows with theirs), the
HTTP toolkit (server) and the API client.

Layers, lowest first (tests/unit/test_layers.py holds the code to them): kernel,
driverapi, spec, package, notifications, mepm, meo, api, cli. A module
imports its own layer and those below, never one above."""
