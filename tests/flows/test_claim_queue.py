"""The hand-off between a mover and its dispatches: one queue of claims that any free dispatch takes,
so a claim never waits for a dispatch still being created while another is free."""

from __future__ import annotations

import threading
import time

from flows.dispatch import ClaimQueue, DispatchSlot


def take_in_thread(slot: DispatchSlot, into: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.append(slot.next_claim()), daemon=True)
    thread.start()
    return thread


def wait_until_waiting(queue: ClaimQueue, count: int) -> None:
    deadline = time.monotonic() + 5
    while queue.waiting < count:
        assert time.monotonic() < deadline, "the dispatch never waited"
        time.sleep(0.01)


def test_a_claim_goes_to_the_dispatch_that_is_free_first():
    queue = ClaimQueue()
    busy, free = DispatchSlot(queue, idle=5), DispatchSlot(queue, idle=5)
    queue.put([1, 2])  # made for a dispatch still being created (`busy` stands for it, not asking yet)
    queue.put([3])
    assert (queue.pending, queue.waiting) == (2, 0)
    assert free.next_claim() == [1, 2] and free.taken == [1, 2]  # the free one takes the oldest at once
    assert busy.next_claim() == [3]
    got: list = []
    thread = take_in_thread(free, got)
    wait_until_waiting(queue, 1)
    queue.put([4])
    thread.join(5)
    assert got == [[4]] and free.taken == [4] and queue.pending == 0


def test_a_dispatch_ends_when_no_claim_came_and_holds_nothing():
    queue = ClaimQueue()
    slot = DispatchSlot(queue, idle=0.2)
    queue.put([1])
    assert slot.next_claim() == [1]
    started = time.monotonic()
    assert slot.next_claim() is None and slot.taken is None
    assert 0.15 < time.monotonic() - started < 3
    ended = DispatchSlot(queue, idle=5, lifetime=0)
    queue.put([2])
    assert ended.next_claim() is None and queue.pending == 1  # past its lifetime: left for another


def test_closing_wakes_waiting_dispatches_and_returns_what_none_took():
    queue = ClaimQueue()
    waiting, busy = DispatchSlot(queue, idle=30), DispatchSlot(queue, idle=30)
    got: list = []
    thread = take_in_thread(waiting, got)
    wait_until_waiting(queue, 1)
    queue.put([7])
    thread.join(5)
    assert got == [[7]]
    thread = take_in_thread(waiting, got)
    wait_until_waiting(queue, 1)
    started = time.monotonic()
    assert queue.close() == []
    thread.join(5)
    assert got == [[7], None] and time.monotonic() - started < 2  # woken, not left to its idle time
    queue.put([8])  # a claim made as the mover stopped
    assert busy.next_claim() is None  # nothing is taken once closed
    assert queue.close() == [[8]]  # for the mover to give back
