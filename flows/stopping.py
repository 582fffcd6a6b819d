"""How a long-lived flow started from its command line is asked to stop.

`python -m flows.mover` (and the other long-lived flows' commands) is what `pds up` and a service
manager run. Ctrl-C (SIGINT) and SIGTERM both ask the flow to finish the work under way, claim nothing
more and end its run Completed. SIGTERM needs care: once a flow run starts, Prefect replaces the SIGTERM
handler with one that raises `TerminationSignal` wherever the main thread is, and the run ends Crashed
(what a Prefect worker's cancellation relies on). A flow started from its command line has no worker, so
its body puts the command's handler back with `keep_stop_handler()`. Until then SIGTERM is held
(blocked, so it stays pending): one sent while Prefect starts the run is handled as soon as the body
begins, which then ends at once. Run by a worker (a deployment), Prefect's handler stays.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

StopHandler = Callable[[int, FrameType | None], None]

_command_handler: StopHandler | None = None


def stop_on_signals(handler: StopHandler) -> None:
    """From a flow's `main()`: SIGINT and SIGTERM call `handler` (the flow's `request_stop`)."""
    global _command_handler
    _command_handler = handler
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    # Held until the flow's body: threads started meanwhile (Prefect's) inherit the block, so the
    # signal can only be taken by the main thread once it unblocks it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def keep_stop_handler() -> None:
    """From the flow's body: SIGTERM calls the command's handler again instead of crashing the run.

    Nothing to do when the flow was not started by its command (a worker, a notebook) or runs outside
    the main thread. Prefect restores the same handler when the run ends."""
    if _command_handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _command_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # one held meanwhile is handled now
