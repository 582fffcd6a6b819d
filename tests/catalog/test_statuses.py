"""The declared status table: every status reachable, and the edges the design requires."""

from catalog.statuses import CODES, INITIAL, TRANSITIONS, TransferStatus, actions, allowed

S = TransferStatus


def test_there_are_exactly_the_eleven_openecpds_statuses_with_their_codes():
    assert [s.value for s in S] == [
        "Arriving",
        "Preset",
        "Fetching",
        "StandBy",
        "Queued",
        "Transferring",
        "Done",
        "Requeued",
        "Stopped",
        "Failed",
        "Interrupted",
    ]
    assert [CODES[s] for s in S] == [
        "INIT",
        "SCHE",
        "FETC",
        "HOLD",
        "WAIT",
        "EXEC",
        "DONE",
        "RETR",
        "STOP",
        "FAIL",
        "INTR",
    ]


def test_every_status_is_reachable_from_a_submission():
    reached, frontier = set(INITIAL), list(INITIAL)
    while frontier:
        current = frontier.pop()
        for t in TRANSITIONS:
            if current in t.sources:
                for target in t.targets - reached:
                    reached.add(target)
                    frontier.append(target)
    assert reached == set(S)


def test_interrupted_only_from_transferring_and_only_back_to_queued():
    into = {s for t in TRANSITIONS if S.INTERRUPTED in t.targets for s in t.sources}
    assert into == {S.TRANSFERRING}
    assert allowed("recover", S.INTERRUPTED, S.QUEUED)
    assert not allowed("recover", S.INTERRUPTED, S.DONE)


def test_the_mover_path_and_its_failures_are_edges():
    assert allowed("stored", S.ARRIVING, S.QUEUED)
    assert allowed("claim", S.QUEUED, S.TRANSFERRING)
    assert allowed("claim", S.REQUEUED, S.TRANSFERRING)
    assert allowed("complete", S.TRANSFERRING, S.DONE)
    assert allowed("retry", S.TRANSFERRING, S.REQUEUED)
    assert allowed("fail", S.TRANSFERRING, S.FAILED)
    assert allowed("stop", S.TRANSFERRING, S.STOPPED)
    assert allowed("expire", S.QUEUED, S.FAILED)


def test_forbidden_edges_are_refused():
    assert not allowed("claim", S.DONE, S.TRANSFERRING)
    assert not allowed("claim", S.STANDBY, S.TRANSFERRING)
    assert not allowed("complete", S.QUEUED, S.DONE)
    assert not allowed("nonsense", S.QUEUED, S.DONE)


def test_monitor_operations_are_declared_actions():
    assert {"requeue", "stop", "hold", "release"} <= actions()
    assert allowed("requeue", S.FAILED, S.REQUEUED)
    assert allowed("requeue", S.STOPPED, S.REQUEUED)
