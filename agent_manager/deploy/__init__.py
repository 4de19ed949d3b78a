"""Deployment: the production topology in one place (:mod:`.topology`), the local
processes that run it (:mod:`.local`, and :mod:`.stack` behind ``am stack``), and the
small entry points the containers use (:mod:`.prepare`, :mod:`.healthcheck`).

``docker-compose.yml`` and ``am stack`` both follow :mod:`.topology`; a test checks
that the compose file says the same. Nothing is imported here, so that the
container healthcheck (``python -m agent_manager.deploy.healthcheck``) stays cheap.
"""
