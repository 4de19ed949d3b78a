"""AgentManager: a coordination server for multi-agent LLM work."""

__version__ = "0.1.0"
