"""Never finishes importing, as an SDK does that waits for a licence server with no timeout."""

import threading

threading.Event().wait()
