"""The worker client never imports the server's modules (it talks to the server only
over HTTP), so a worker machine needs none of them loaded."""

from __future__ import annotations

import subprocess
import sys


def test_the_client_imports_no_server_module() -> None:
    code = (
        "import sys, agent_manager.client, agent_manager.client.app, "
        "agent_manager.client.locking\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "[['agent_manager', p] for p in ('api', 'core', 'db', 'embedded')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
