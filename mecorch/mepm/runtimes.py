"""Runtime ids: which backend objects are an instance's current runtime.

A rolling upgrade (mecorch.mepm.upgrade) starts the new version BESIDE the
old one, so the two need different names and labels on the backend. The
drivers name and label everything by `ResourceRequest.instance_id`; the
new runtime is given the id `<instance id>.g<n>` (n: the instance's
generation), so no driver changes. The instance records which runtime is
current (`_runtime`; absent: the instance id itself, every instance
deployed before upgrades existed and every one never upgraded).

Everything that maps a backend observation to an instance (reconcile,
watch, supervisor) goes through `owner` and `is_current`: a runtime of an
instance that is not its current one is a leftover (an orphan), unless an
upgrade of that instance is working on it.
"""

from __future__ import annotations

import dataclasses
import re

from mecorch.driverapi.model import Observation

# the suffix a rolling upgrade adds; instance ids are UUIDs (or the MEO's
# UUIDs), which never end so
_SUFFIX = re.compile(r"\.g[1-9][0-9]{0,8}$")
MAX_ID = 64                     # mecorch.kernel.validate.ident


def runtime_id(instance_id: str, generation: int) -> str:
    """The runtime id of generation `generation` (0: the instance id)."""
    return instance_id if generation == 0 else f"{instance_id}.g{generation}"


def owner(runtime: str) -> str:
    """The instance a backend object's id belongs to."""
    return _SUFFIX.sub("", runtime)


def current(inst: dict) -> str:
    """The instance's current runtime id."""
    return inst.get("_runtime") or inst["id"]


def is_current(inst: dict | None, runtime: str) -> bool:
    return bool(inst) and current(inst) == runtime


def as_instance(obs: Observation) -> Observation:
    """The observation as the instance's (the record, the supervisor and
    the log lines speak of instances, not runtimes)."""
    iid = owner(obs.instance_id)
    return obs if iid == obs.instance_id else dataclasses.replace(obs, instance_id=iid)
