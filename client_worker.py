"""Run an AgentManager worker: ``python client_worker.py [--config mcp_client_config.json]``.

A thin entry point for machines that run workers from a checkout; it is the same
command as ``am worker`` (see ``python client_worker.py --help``).
"""

import typer

from agent_manager.cli.worker_cmd import worker

if __name__ == "__main__":
    typer.run(worker)
