from hokusai_registry.cli import main

main()
