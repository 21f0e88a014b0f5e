from nasplat.cli.main import main

main()
