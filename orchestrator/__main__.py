"""`python -m orchestrator`: the fleet daemon (orchestrator.daemon.main).

The daemon is started through this module, not `-m orchestrator.daemon`: multiprocessing
re-runs the parent's main module in every forkserver child unless it is a package's
`__main__`, and re-running `orchestrator.daemon` there (already imported by the preload)
warned "found in sys.modules" on every worker spawn, and cost each worker its imports."""

import sys

from orchestrator.daemon import main

sys.exit(main())
