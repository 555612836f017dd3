"""Guard Python subprocesses whose PYTHONPATH includes this directory."""

import loopback_guard

loopback_guard.install()
