"""`python -m orchestra_agent` runs the agent like the `orchestra-agent` console script."""
import sys

from orchestra_agent.cli import main

sys.exit(main())
