"""The eleven transfer statuses and the one table of transitions allowed between them.

Names and codes are OpenECPDS's. Every status change in pds goes through `transfers.change_status`,
which refuses an edge that is not declared here and writes a history row for every one that is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TransferStatus(StrEnum):
    ARRIVING = "Arriving"
    PRESET = "Preset"
    FETCHING = "Fetching"
    STANDBY = "StandBy"
    QUEUED = "Queued"
    TRANSFERRING = "Transferring"
    DONE = "Done"
    REQUEUED = "Requeued"
    STOPPED = "Stopped"
    FAILED = "Failed"
    INTERRUPTED = "Interrupted"

    @property
    def code(self) -> str:
        """The four-letter OpenECPDS code (INIT, SCHE, …) used in event logs."""
        return CODES[self]


S = TransferStatus

CODES: dict[TransferStatus, str] = {
    S.ARRIVING: "INIT",
    S.PRESET: "SCHE",
    S.FETCHING: "FETC",
    S.STANDBY: "HOLD",
    S.QUEUED: "WAIT",
    S.TRANSFERRING: "EXEC",
    S.DONE: "DONE",
    S.REQUEUED: "RETR",
    S.STOPPED: "STOP",
    S.FAILED: "FAIL",
    S.INTERRUPTED: "INTR",
}

#: Statuses a transfer enters when it is first created (push mode, fetch mode).
INITIAL: frozenset[TransferStatus] = frozenset({S.ARRIVING, S.PRESET})

#: Statuses a mover may claim once the scheduled time has passed.
READY: frozenset[TransferStatus] = frozenset({S.QUEUED, S.REQUEUED})

#: Statuses in which nothing happens until a person or a policy acts.
FINAL: frozenset[TransferStatus] = frozenset({S.DONE, S.STOPPED, S.FAILED})


@dataclass(frozen=True)
class Transition:
    """A named edge of the status graph; `doc` says when it is taken."""

    action: str
    sources: frozenset[TransferStatus]
    targets: frozenset[TransferStatus]
    doc: str


def _t(action: str, sources: set[TransferStatus], targets: set[TransferStatus], doc: str) -> Transition:
    return Transition(action, frozenset(sources), frozenset(targets), doc)


_QUEUEABLE = {S.QUEUED, S.REQUEUED, S.STANDBY}

TRANSITIONS: tuple[Transition, ...] = (
    # Submission
    _t("stored", {S.ARRIVING}, {S.QUEUED, S.STANDBY}, "The pushed content is whole in the Data Store."),
    _t("arrival_failed", {S.ARRIVING}, {S.FAILED}, "The upload broke off before the content was whole."),
    _t("fetch", {S.PRESET}, {S.FETCHING}, "The retrieval scheduler starts fetching the content."),
    _t("fetched", {S.FETCHING}, {S.QUEUED, S.STANDBY}, "The fetched content is whole in the Data Store."),
    _t("fetch_failed", {S.FETCHING}, {S.FAILED, S.PRESET}, "Retrieval failed; Preset when it is retried."),
    # Processing
    _t("claim", set(READY), {S.TRANSFERRING}, "A mover takes a ready transfer whose time has come."),
    _t("complete", {S.TRANSFERRING}, {S.DONE}, "The file reached the remote site whole."),
    _t("retry", {S.TRANSFERRING}, {S.REQUEUED}, "An attempt failed but may be retried later."),
    _t("fail", {S.TRANSFERRING}, {S.FAILED}, "An attempt failed and no retry is left."),
    _t("downloaded", {S.QUEUED, S.REQUEUED, S.STANDBY, S.DONE}, {S.DONE}, "A data user pulled the file."),
    _t(
        "delete",
        _QUEUEABLE | {S.DONE, S.PRESET},
        {S.STOPPED},
        "A data user deleted (or replaced) the file in the portal (an on-demand one before its retrieval too).",
    ),
    _t(
        "replace",
        _QUEUEABLE | {S.DONE, S.FAILED, S.INTERRUPTED, S.PRESET},
        {S.STOPPED},
        "A push with --requeue or --force replaced the file: the older transfer stops.",
    ),
    _t("expire", _QUEUEABLE | {S.PRESET}, {S.FAILED}, "Not transferred before expiration."),
    _t("interrupt", {S.TRANSFERRING}, {S.INTERRUPTED}, "The mover running it stopped or restarted."),
    _t(
        "await_retrieval",
        {S.TRANSFERRING},
        {S.PRESET},
        "Its data file is not in the Data Store yet (registered without retrieval): the mover asks for it.",
    ),
    _t("recover", {S.INTERRUPTED}, {S.QUEUED}, "Recovery puts an interrupted transfer back in the queue."),
    # Operations from the monitor, the API and `pds`
    _t("hold", {S.QUEUED, S.REQUEUED}, {S.STANDBY}, "An operator holds the transfer."),
    _t("release", {S.STANDBY}, {S.QUEUED}, "An operator (or a rename in the portal) releases it."),
    _t(
        "requeue",
        {S.DONE, S.FAILED, S.STOPPED, S.INTERRUPTED, S.REQUEUED, S.QUEUED, S.STANDBY},
        {S.REQUEUED},
        "An operator asks for the transfer to be done (again).",
    ),
    # Changes that keep the status (self-edges), so they are checked and recorded like the others.
    _t("reprioritise", _QUEUEABLE | {S.PRESET}, _QUEUEABLE | {S.PRESET}, "An operator changes the priority."),
    _t("schedule_now", _QUEUEABLE, _QUEUEABLE, "An operator asks for the transfer to start at once."),
    _t("extend_lifetime", _QUEUEABLE | {S.PRESET}, _QUEUEABLE | {S.PRESET}, "An operator extends its lifetime."),
    _t(
        "stop",
        _QUEUEABLE | {S.TRANSFERRING, S.INTERRUPTED, S.FAILED, S.PRESET, S.FETCHING},
        {S.STOPPED},
        "An operator, or an unrecoverable error, stops the transfer.",
    ),
)

_EDGES: dict[tuple[str, TransferStatus], frozenset[TransferStatus]] = {
    (t.action, source): t.targets for t in TRANSITIONS for source in t.sources
}


def allowed(action: str, source: TransferStatus, target: TransferStatus) -> bool:
    """Whether `action` may move a transfer from `source` to `target`."""
    return target in _EDGES.get((action, source), frozenset())


def actions() -> frozenset[str]:
    return frozenset(t.action for t in TRANSITIONS)
