from agent_manager.cli import main

main()
