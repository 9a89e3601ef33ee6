"""Make the agent package (roles/agent/files/agent/orchestra_agent) importable for its unit tests."""
import os
import sys

AGENT_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'roles', 'agent', 'files', 'agent')
AGENT_SOURCE = os.path.normpath(AGENT_SOURCE)
if AGENT_SOURCE not in sys.path:
    sys.path.insert(0, AGENT_SOURCE)
