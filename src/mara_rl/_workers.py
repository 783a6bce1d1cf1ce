"""What every worker-process pool of mara-rl starts its workers with."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int) -> None:
    """Pool worker initializer: end this worker within a second of its parent's death (or when
    the C call it is in, such as one Vina search, returns the interpreter lock). A pool's workers
    otherwise outlive a SIGKILLed parent forever, blocked on its task queue."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
