from hokusai_registry.run.cli import main

main()
