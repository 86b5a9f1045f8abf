"""Lifecycle states, with the ETSI MEC 010-2 spelling where ETSI has one."""

from enum import Enum


class DeploymentType(str, Enum):
    """The deployment manner of an instance (a documented mecorch extension:
    ETSI has no container deployment)."""
    CONTAINER = "CONTAINER"
    VM = "VM"


class OnboardingState(str, Enum):
    CREATED = "CREATED"
    UPLOADING = "UPLOADING"
    PROCESSING = "PROCESSING"
    ONBOARDED = "ONBOARDED"
    ERROR = "ERROR"


class OperationalState(str, Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


class UsageState(str, Enum):
    IN_USE = "IN_USE"
    NOT_IN_USE = "NOT_IN_USE"


class InstantiationState(str, Enum):
    NOT_INSTANTIATED = "NOT_INSTANTIATED"
    INSTANTIATED = "INSTANTIATED"


class InstanceOperationalState(str, Enum):
    """operationalState of an instantiated app (AppInstanceInfo)."""
    STARTED = "STARTED"
    STOPPED = "STOPPED"


class LcmOperation(str, Enum):
    # "INSTATIATE" is how the ETSI MEC 010-2 OpenAPI spells it; responses
    # must validate against that schema, so the typo is kept on the wire.
    INSTANTIATE = "INSTATIATE"
    OPERATE = "OPERATE"
    TERMINATE = "TERMINATE"
    # mecorch extension (ETSI's enum has no such value): a rolling upgrade
    # to another version of the package, modelled on NFV-SOL 003's "Change
    # current VNF package" (mecorch.mepm.upgrade)
    CHANGE_APP_PKG = "CHANGE_APP_PKG"
    # mecorch extension (not in ETSI's enum either): the MEO moves an
    # instance to another edge host, same id, DNS name, rules and data
    # (mecorch.meo.relocate)
    RELOCATE = "RELOCATE"


def operation_words(value: str) -> str:
    """An `lcmOperation` value as prose spells it (log lines, messages,
    reasons): the member's name, so INSTANTIATE, never the wire's typo."""
    try:
        return LcmOperation(value).name
    except ValueError:
        return str(value)


class OperationState(str, Enum):
    """operationState of an LCM operation occurrence."""
    STARTING = "STARTING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class TerminationType(str, Enum):
    GRACEFUL = "GRACEFUL"
    FORCEFUL = "FORCEFUL"


class ObservedState(str, Enum):
    """What a backend reports about an instance's runtime, kept apart from
    what mecorch decided (the instance's own state in the store)."""
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    MISSING = "MISSING"
    UNKNOWN = "UNKNOWN"
    # the runtime kept dying and the supervisor gave up restarting it
    # (mecorch.mepm.supervisor); an operator's start begins again
    CRASH_LOOP = "CRASH_LOOP"
